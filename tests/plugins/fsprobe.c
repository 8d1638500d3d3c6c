/*
 * fsprobe.c - a tiny test plugin for the filesystem grant (`allowed_paths`): it reads and writes files
 * with plain stdio, which in the Wasm build works only inside directories the host preopened.
 *
 *   read_file   input: a path; output: the file's bytes
 *   write_file  input: "<path>\n<text>"; writes text to path (created or truncated), output "ok"
 * A failure is an io_error whose message starts with "errno <n> (<strerror>)", so tests can tell
 * "not granted" (ENOENT/ENOTCAPABLE) from "read-only" (EROFS/EPERM/EACCES/ENOTCAPABLE).
 */
#include "querymt_plugin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *cstring(qmt_slice in) {
    char *s = malloc(in.len + 1);
    memcpy(s, in.data, in.len);
    s[in.len] = 0;
    return s;
}

static int32_t io_error(qmt_buf *out, const char *what, const char *path) {
    int e = errno;
    return qmt_fail(out, "io_error", "errno %d (%s): %s %s", e, strerror(e), what, path);
}

static int32_t op_read_file(qmt_slice in, qmt_buf *out) {
    char *path = cstring(in);
    FILE *f = fopen(path, "rb");
    int32_t rc = 0;
    if (!f) {
        rc = io_error(out, "open", path);
    } else {
        char block[4096];
        size_t n;
        while ((n = fread(block, 1, sizeof block, f)) > 0) qmt_buf_put(out, block, n);
        if (ferror(f)) rc = io_error(out, "read", path);
        fclose(f);
    }
    free(path);
    return rc;
}

static int32_t op_write_file(qmt_slice in, qmt_buf *out) {
    char *arg = cstring(in);
    char *text = strchr(arg, '\n');
    int32_t rc = 0;
    if (!text) {
        free(arg);
        return qmt_fail(out, "json_error", "expected \"<path>\\n<text>\"");
    }
    *text++ = 0;
    FILE *f = fopen(arg, "wb");
    if (!f) {
        rc = io_error(out, "open for writing", arg);
    } else {
        size_t len = strlen(text);
        if (fwrite(text, 1, len, f) != len) rc = io_error(out, "write", arg);
        if (fclose(f) != 0 && !rc) rc = io_error(out, "close", arg);
        if (!rc) qmt_buf_puts(out, "ok");
    }
    free(arg);
    return rc;
}

QMT_TEXT_OP(op_name, "fsprobe")

#define FSPROBE_OPS(X) X(name, op_name) X(init_logging, qmt_op_empty) X(read_file, op_read_file) X(write_file, op_write_file)
QMT_PLUGIN(FSPROBE_OPS)

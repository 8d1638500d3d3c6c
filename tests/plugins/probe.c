/*
 * probe.c - a generation B test plugin that exercises every host function, for tests of the host.
 *
 *   chat         GET cfg.base_url + (cfg.path or "/probe") with qmt_http_request; the reply text is
 *                "<status> <body>"
 *   chat_stream  the same request through qmt_http_stream_open/next/close; every raw chunk becomes a
 *                text chunk, then a done chunk
 *   embed        one qmt_log record at each level 1..5 (target "probe"); returns [[0.0]]
 *   complete     returns the text of the file named by the prompt (fopen): the native build can read
 *                files, the Wasm build has no filesystem - the sandbox, shown
 * A host-function failure fails the operation with -1 and the host's text.
 */
#include "qmt_json.h"
#include "querymt_plugin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char CONFIG_SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{\"base_url\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"}},"
    "\"required\":[\"base_url\"]}";

static int32_t parse(qmt_slice in, qmt_json_doc *doc, const qmt_json **root, qmt_buf *out) {
    char err[128];
    *root = qmt_json_parse(in, doc, err, sizeof err);
    return *root ? 0 : qmt_fail(out, "json_error", "invalid JSON: %s", err);
}

/* The SerializableHttpRequest of a GET to the URL in the request's cfg. */
static int32_t build_get(const qmt_json *root, qmt_buf *req, qmt_buf *out) {
    const qmt_json *cfg = qmt_json_get(root, "cfg");
    const char *base = qmt_json_string(qmt_json_get(cfg, "base_url"), NULL);
    if (!base) return qmt_fail(out, "json_error", "cfg: missing string field `base_url`");
    qmt_buf url = {0};
    qmt_buf_printf(&url, "%s%s", base, qmt_json_string(qmt_json_get(cfg, "path"), "/probe"));
    qmt_buf_puts(req, "{\"req\":{\"head\":{\"method\":\"GET\",\"uri\":");
    qmt_json_write_string(req, (const char *)url.data, url.len);
    qmt_buf_puts(req, ",\"headers\":{},\"version\":\"HTTP/1.1\"},\"body\":[]}}");
    qmt_buf_free(&url);
    return 0;
}

/* Host-function failures are unstructured errors carrying the host's text. */
static int32_t host_failed(qmt_buf *host_text, qmt_buf *out) {
    qmt_buf_reset(out);
    qmt_buf_put(out, host_text->data, host_text->len);
    return -1;
}

/* Writes "<status> <body>" of a SerializableHttpResponse as a JSON string. */
static int32_t write_status_and_body(qmt_slice response, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    int32_t rc = parse(response, &doc, &root, out);
    const qmt_json *resp = rc ? NULL : qmt_json_get(root, "resp");
    const qmt_json *status = qmt_json_get(qmt_json_get(resp, "head"), "status");
    qmt_buf text = {0};
    if (!rc && (!status || qmt_json_bytes(qmt_json_get(resp, "body"), &text) != 0))
        rc = qmt_fail(out, "json_error", "not a SerializableHttpResponse");
    if (!rc) {
        qmt_buf line = {0};
        qmt_buf_printf(&line, "%.0f ", status->num);
        qmt_buf_put(&line, text.data, text.len);
        qmt_json_write_string(out, (const char *)line.data, line.len);
        qmt_buf_free(&line);
    }
    qmt_buf_free(&text);
    qmt_json_doc_free(&doc);
    return rc;
}

static int32_t op_chat(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    qmt_buf req = {0}, resp = {0};
    int32_t rc = parse(in, &doc, &root, out);
    if (!rc) rc = build_get(root, &req, out);
    if (!rc && qmt_http_request(qmt_buf_slice(&req), &resp) != 0) rc = host_failed(&resp, out);
    if (!rc) {
        qmt_buf_puts(out, "{\"text\":");
        rc = write_status_and_body(qmt_buf_slice(&resp), out); /* on failure `out` is the error alone */
    }
    if (!rc) qmt_buf_puts(out, ",\"tool_calls\":null,\"thinking\":null,\"usage\":null,\"finish_reason\":\"Stop\"}");
    qmt_buf_free(&req);
    qmt_buf_free(&resp);
    qmt_json_doc_free(&doc);
    return rc;
}

static void yield_done(void) { qmt_yield_chunk(qmt_cstr("{\"chunk\":{\"done\":{\"finish_reason\":\"Stop\"}},\"usage\":null}")); }

/* Reads a StreamOpenResult: 0 with *id for "ok", 0 with *id = 0 for "cancelled"; an "error" fails the
   operation with its error_code and the decoded plugin_error text, as QueryMT's plugins do. */
static int32_t read_open_result(qmt_slice result, int64_t *id, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    int32_t rc = parse(result, &doc, &root, out);
    const char *status = rc ? "" : qmt_json_string(qmt_json_get(root, "status"), "");
    *id = 0;
    if (rc || strcmp(status, "cancelled") == 0) {
        /* nothing more to read */
    } else if (strcmp(status, "ok") == 0) {
        *id = (int64_t)qmt_json_number(qmt_json_get(root, "stream_id"), 0);
    } else if (strcmp(status, "error") == 0) {
        const qmt_json *text = qmt_json_get(root, "plugin_error");
        qmt_buf_reset(out);
        if (text && text->type == QMT_JSON_STRING) qmt_buf_put(out, text->str, text->len);
        rc = (int32_t)qmt_json_number(qmt_json_get(root, "error_code"), 1);
    } else {
        rc = qmt_fail(out, "json_error", "not a StreamOpenResult");
    }
    qmt_json_doc_free(&doc);
    return rc;
}

static void yield_text(const qmt_buf *text) {
    qmt_buf chunk = {0};
    qmt_buf_puts(&chunk, "{\"chunk\":{\"text\":");
    qmt_json_write_string(&chunk, (const char *)text->data, text->len);
    qmt_buf_puts(&chunk, "},\"usage\":null}");
    qmt_yield_chunk(qmt_buf_slice(&chunk));
    qmt_buf_free(&chunk);
}

static int32_t pump_stream(int64_t id, qmt_buf *out) {
    qmt_buf data = {0};
    int32_t rc = 0;
    while (!rc) {
        if (qmt_http_stream_next(id, &data) != 0) rc = host_failed(&data, out);
        else if (data.len == 0) break;
        else yield_text(&data);
    }
    qmt_http_stream_close(id);
    qmt_buf_free(&data);
    return rc;
}

static int32_t op_chat_stream(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    qmt_buf req = {0}, result = {0};
    int64_t id = 0;
    int32_t rc = parse(in, &doc, &root, out);
    if (!rc) rc = build_get(root, &req, out);
    if (!rc && qmt_http_stream_open(qmt_buf_slice(&req), &result) != 0) rc = host_failed(&result, out);
    if (!rc) rc = read_open_result(qmt_buf_slice(&result), &id, out);
    if (!rc && id) rc = pump_stream(id, out);
    if (!rc) yield_done();
    qmt_buf_free(&req);
    qmt_buf_free(&result);
    qmt_json_doc_free(&doc);
    return rc;
}

static int32_t op_embed(qmt_slice in, qmt_buf *out) {
    (void)in;
    static const char *const names[] = {"", "error", "warn", "info", "debug", "trace"};
    for (int level = 1; level <= 5; level++) qmt_log(level, "probe", "%s record", names[level]);
    qmt_buf_puts(out, "[[0.0]]");
    return 0;
}

static int32_t read_file(const char *name, qmt_buf *text, qmt_buf *out) {
    FILE *f = fopen(name, "rb");
    if (!f) return qmt_fail(out, "io_error", "%s: %s", name, strerror(errno));
    char block[4096];
    size_t n;
    while ((n = fread(block, 1, sizeof block, f)) > 0) qmt_buf_put(text, block, n);
    int failed = ferror(f);
    fclose(f);
    return failed ? qmt_fail(out, "io_error", "%s: read error", name) : 0;
}

static int32_t op_complete(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    qmt_buf text = {0};
    int32_t rc = parse(in, &doc, &root, out);
    const char *prompt = rc ? NULL : qmt_json_string(qmt_json_get(qmt_json_get(root, "req"), "prompt"), NULL);
    if (!rc && !prompt) rc = qmt_fail(out, "json_error", "req: missing string field `prompt`");
    if (!rc) rc = read_file(prompt, &text, out);
    if (!rc) {
        qmt_buf_puts(out, "{\"text\":");
        qmt_json_write_string(out, (const char *)text.data, text.len);
        qmt_buf_putc(out, '}');
    }
    qmt_buf_free(&text);
    qmt_json_doc_free(&doc);
    return rc;
}

QMT_TEXT_OP(op_name, "probe")
QMT_TEXT_OP(op_config_schema, CONFIG_SCHEMA)

static int32_t op_init_logging(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *level;
    int32_t rc = parse(in, &doc, &level, out);
    if (!rc && level->type != QMT_JSON_NUMBER) rc = qmt_fail(out, "json_error", "expected a log level number");
    if (!rc) qmt_set_log_level((int)level->num);
    qmt_json_doc_free(&doc);
    return rc;
}

QMT_TEXT_OP(op_supports_streaming, "true")
QMT_TEXT_OP(op_list_models, "[\"probe\"]")

#define PROBE_OPS(X)                                                                                           \
    X(name, op_name)                                                                                           \
    X(api_key_name, qmt_op_empty)                                                                              \
    X(config_schema, op_config_schema)                                                                         \
    X(init_logging, op_init_logging)                                                                           \
    X(from_config, qmt_op_echo)                                                                                \
    X(supports_streaming, op_supports_streaming)                                                               \
    X(chat, op_chat)                                                                                           \
    X(chat_stream, op_chat_stream)                                                                             \
    X(embed, op_embed)                                                                                         \
    X(complete, op_complete)                                                                                   \
    X(list_models, op_list_models)
QMT_PLUGIN(PROBE_OPS)

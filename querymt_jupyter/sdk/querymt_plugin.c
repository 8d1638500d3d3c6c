/*
 * querymt_plugin.c - the runtime behind querymt_plugin.h, for both builds.
 *
 * Shared: qmt_buf, qmt_fail, qmt_log. Then one of two back ends, chosen by the target:
 *   - Wasm: a minimal Extism guest. Extism keeps the call's input, output, error and every buffer
 *     exchanged with host functions in its own "kernel" memory, reached only through the
 *     `extism:host/env` imports; this file copies bytes between that memory and the module's heap.
 *   - Native: the querymt-jupyter native ABI v1 (native-abi.md): qmt_call dispatches on the operation
 *     name and host functions are callbacks in the struct qmt_host_v1 given to qmt_init.
 */
#include "querymt_plugin.h"

#include "qmt_json.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- qmt_buf ------------------------------------------------------------------------------------ */

/* Makes room for `extra` more bytes plus the terminating NUL. Running out of memory has no useful
   answer inside a plugin call, so it aborts (a trap in Wasm). */
static void buf_reserve(qmt_buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->len) abort();
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) abort();
    b->data = p;
    b->cap = cap;
}

void qmt_buf_put(qmt_buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void qmt_buf_puts(qmt_buf *b, const char *s) { qmt_buf_put(b, s, strlen(s)); }

void qmt_buf_putc(qmt_buf *b, char c) { qmt_buf_put(b, &c, 1); }

void qmt_buf_vprintf(qmt_buf *b, const char *fmt, va_list ap) {
    va_list probe;
    va_copy(probe, ap);
    int n = vsnprintf(NULL, 0, fmt, probe);
    va_end(probe);
    if (n <= 0) return;
    buf_reserve(b, (size_t)n);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void qmt_buf_printf(qmt_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    qmt_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void qmt_buf_reset(qmt_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

void qmt_buf_free(qmt_buf *b) {
    free(b->data);
    *b = (qmt_buf){0};
}

qmt_slice qmt_buf_slice(const qmt_buf *b) { return (qmt_slice){b->data, b->len}; }

qmt_slice qmt_cstr(const char *s) { return (qmt_slice){(const uint8_t *)s, s ? strlen(s) : 0}; }

/* ---- ready-made operations ---------------------------------------------------------------------- */

int32_t qmt_op_empty(qmt_slice in, qmt_buf *out) {
    (void)in;
    (void)out;
    return 0;
}

int32_t qmt_op_echo(qmt_slice in, qmt_buf *out) {
    qmt_buf_put(out, in.data, in.len);
    return 0;
}

/* ---- errors and logging ------------------------------------------------------------------------- */

int32_t qmt_fail(qmt_buf *out, const char *type, const char *fmt, ...) {
    qmt_buf message = {0};
    va_list ap;
    va_start(ap, fmt);
    qmt_buf_vprintf(&message, fmt, ap);
    va_end(ap);
    qmt_buf_reset(out);
    qmt_buf_puts(out, "{\"payload\":{\"type\":");
    qmt_json_write_cstr(out, type);
    qmt_buf_puts(out, ",\"message\":");
    qmt_json_write_string(out, (const char *)message.data, message.len);
    qmt_buf_puts(out, "}}");
    qmt_buf_free(&message);
    return 1;
}

/* A failing operation must say something: the host shows this text when the plugin gave none. */
static void ensure_error_text(qmt_buf *out, int32_t rc) {
    if (out->len == 0) qmt_buf_printf(out, "plugin operation failed with code %d", (int)rc);
}

/* The only state shared between calls; atomic so thread-safe native plugins may log concurrently. */
static atomic_int log_level;

void qmt_set_log_level(int level) { atomic_store_explicit(&log_level, level, memory_order_relaxed); }

static void send_log_record(qmt_slice record);

void qmt_log(int level, const char *target, const char *fmt, ...) {
    if (level < 1 || level > atomic_load_explicit(&log_level, memory_order_relaxed)) return;
    qmt_buf message = {0}, record = {0};
    va_list ap;
    va_start(ap, fmt);
    qmt_buf_vprintf(&message, fmt, ap);
    va_end(ap);
    qmt_buf_printf(&record, "{\"level\":%d,\"target\":", level);
    qmt_json_write_cstr(&record, target ? target : "");
    qmt_buf_puts(&record, ",\"message\":");
    qmt_json_write_string(&record, (const char *)message.data, message.len);
    qmt_buf_putc(&record, '}');
    send_log_record(qmt_buf_slice(&record));
    qmt_buf_free(&message);
    qmt_buf_free(&record);
}

/* The id argument of the stream host functions is the JSON text of an integer (wire spec section 8). */
static qmt_slice stream_id_text(int64_t id, char text[24]) {
    int n = snprintf(text, 24, "%lld", (long long)id);
    return (qmt_slice){(const uint8_t *)text, (size_t)n};
}

#if defined(QMT_TARGET_WASM)
/* ---- Wasm: the Extism guest side ------------------------------------------------------------------ */

#define EXTISM_ENV(sym) __attribute__((import_module("extism:host/env"), import_name(#sym)))
#define EXTISM_USER(sym) __attribute__((import_module("extism:host/user"), import_name(#sym)))

/* Kernel memory is addressed by 64-bit offsets; 0 means "no block". */
EXTISM_ENV(input_length) extern uint64_t extism_input_length(void);
EXTISM_ENV(input_load_u8) extern uint8_t extism_input_load_u8(uint64_t offset);
EXTISM_ENV(input_load_u64) extern uint64_t extism_input_load_u64(uint64_t offset);
EXTISM_ENV(alloc) extern uint64_t extism_alloc(uint64_t length);
EXTISM_ENV(length) extern uint64_t extism_length(uint64_t offset);
EXTISM_ENV(free) extern void extism_free(uint64_t offset);
EXTISM_ENV(load_u8) extern uint8_t extism_load_u8(uint64_t offset);
EXTISM_ENV(load_u64) extern uint64_t extism_load_u64(uint64_t offset);
EXTISM_ENV(store_u8) extern void extism_store_u8(uint64_t offset, uint8_t value);
EXTISM_ENV(store_u64) extern void extism_store_u64(uint64_t offset, uint64_t value);
EXTISM_ENV(output_set) extern void extism_output_set(uint64_t offset, uint64_t length);
EXTISM_ENV(error_set) extern void extism_error_set(uint64_t offset);
EXTISM_ENV(config_get) extern uint64_t extism_config_get(uint64_t key_offset);

/* QueryMT's host functions (wire spec section 8), named apart from the SDK's public wrappers. */
EXTISM_USER(qmt_http_request) extern uint64_t import_http_request(uint64_t request);
EXTISM_USER(qmt_http_stream_open) extern uint64_t import_http_stream_open(uint64_t request);
EXTISM_USER(qmt_http_stream_next) extern uint64_t import_http_stream_next(uint64_t stream_id);
EXTISM_USER(qmt_http_stream_close) extern void import_http_stream_close(uint64_t stream_id);
EXTISM_USER(qmt_yield_chunk) extern void import_yield_chunk(uint64_t chunk);
EXTISM_USER(qmt_log) extern void import_log(uint64_t record);

/* Copies bytes into a new kernel block (8 bytes per call where possible: each load/store is a call
   into the kernel module). Returns 0 for empty input, which hosts read as an empty block. */
static uint64_t kernel_put(qmt_slice s) {
    if (s.len == 0) return 0;
    uint64_t off = extism_alloc(s.len);
    size_t i = 0;
    for (; i + 8 <= s.len; i += 8) {
        uint64_t word;
        memcpy(&word, s.data + i, 8);
        extism_store_u64(off + i, word);
    }
    for (; i < s.len; i++) extism_store_u8(off + i, s.data[i]);
    return off;
}

/* Replaces `out` with the bytes of kernel block `off` and frees the block (the guest owns what a host
   function returns). Offset 0 reads as empty. */
static void kernel_take(uint64_t off, qmt_buf *out) {
    qmt_buf_reset(out);
    if (off == 0) return;
    size_t n = (size_t)extism_length(off);
    buf_reserve(out, n);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word = extism_load_u64(off + i);
        memcpy(out->data + i, &word, 8);
    }
    for (; i < n; i++) out->data[i] = extism_load_u8(off + i);
    out->len = n;
    out->data[n] = 0;
    extism_free(off);
}

static void read_input(qmt_buf *in) {
    size_t n = (size_t)extism_input_length();
    buf_reserve(in, n);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word = extism_input_load_u64(i);
        memcpy(in->data + i, &word, 8);
    }
    for (; i < n; i++) in->data[i] = extism_input_load_u8(i);
    in->len = n;
    in->data[n] = 0;
}

int32_t qmt__wasm_run(qmt_op_fn fn) {
    qmt_buf in = {0}, out = {0};
    read_input(&in);
    int32_t rc = fn(qmt_buf_slice(&in), &out);
    qmt_buf_free(&in);
    if (rc != 0) ensure_error_text(&out, rc);
    /* The output and error blocks belong to the kernel from here on: it resets them on the next call. */
    uint64_t off = kernel_put(qmt_buf_slice(&out));
    if (rc != 0) extism_error_set(off);
    else if (out.len) extism_output_set(off, out.len);
    qmt_buf_free(&out);
    return rc;
}

/* Sends `in` to a host function that answers with a block; the input block is ours to free after. */
static uint64_t call_with_block(uint64_t (*import)(uint64_t), qmt_slice in) {
    uint64_t off = kernel_put(in);
    uint64_t result = import(off);
    if (off) extism_free(off);
    return result;
}

static void call_void(void (*import)(uint64_t), qmt_slice in) {
    uint64_t off = kernel_put(in);
    import(off);
    if (off) extism_free(off);
}

/* A request must be answered; offset 0 only happens when the host had nothing to give. */
static int32_t take_required(uint64_t off, const char *function, qmt_buf *out) {
    kernel_take(off, out);
    if (out->len) return 0;
    qmt_buf_printf(out, "%s: the host returned no result", function);
    return -1;
}

int32_t qmt_http_request(qmt_slice request_json, qmt_buf *response_json) {
    uint64_t off = call_with_block(import_http_request, request_json);
    return take_required(off, "qmt_http_request", response_json);
}

int32_t qmt_http_stream_open(qmt_slice request_json, qmt_buf *result_json) {
    uint64_t off = call_with_block(import_http_stream_open, request_json);
    return take_required(off, "qmt_http_stream_open", result_json);
}

int32_t qmt_http_stream_next(int64_t stream_id, qmt_buf *chunk) {
    char text[24];
    kernel_take(call_with_block(import_http_stream_next, stream_id_text(stream_id, text)), chunk);
    return 0;
}

void qmt_http_stream_close(int64_t stream_id) {
    char text[24];
    call_void(import_http_stream_close, stream_id_text(stream_id, text));
}

void qmt_yield_chunk(qmt_slice chunk_json) { call_void(import_yield_chunk, chunk_json); }

static void send_log_record(qmt_slice record) { call_void(import_log, record); }

char *qmt_config_get(const char *key) {
    if (!key || !*key) return NULL;
    uint64_t off = call_with_block(extism_config_get, qmt_cstr(key));
    if (off == 0) return NULL;
    qmt_buf value = {0};
    kernel_take(off, &value);
    buf_reserve(&value, 0); /* an empty value is "", not NULL */
    return (char *)value.data;
}

#else
/* ---- Native: querymt-jupyter native ABI v1 -------------------------------------------------------- */

#if defined(_WIN32)
#define QMT_API __declspec(dllexport)
#else
#define QMT_API __attribute__((visibility("default")))
#endif

static const struct qmt_host_v1 *host;

QMT_API uint32_t qmt_abi_version(void) { return QMT_ABI_VERSION; }

QMT_API const char *qmt_exports(void) { return qmt__exports_json; }

/* A library has one set of globals; a host that loads it again (after closing an instance) starts
   from a clean state: logging off until init_logging, as in a fresh Wasm instance. */
QMT_API int32_t qmt_init(const struct qmt_host_v1 *h) {
    if (!h || h->abi_version != QMT_ABI_VERSION) return 1;
    host = h;
    qmt_set_log_level(0);
    return 0;
}

static qmt_op_fn find_op(const char *name) {
    if (!name) return NULL;
    for (const qmt__op *op = qmt__ops; op->name; op++)
        if (strcmp(op->name, name) == 0) return op->fn;
    return NULL;
}

QMT_API int32_t qmt_call(const char *op, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len) {
    qmt_buf buf = {0};
    qmt_op_fn fn = find_op(op);
    int32_t rc;
    if (fn) {
        rc = fn((qmt_slice){in, in_len}, &buf);
    } else {
        qmt_buf_printf(&buf, "unknown operation: %s", op ? op : "(null)");
        rc = -2;
    }
    if (rc != 0) ensure_error_text(&buf, rc);
    if (buf.len == 0) qmt_buf_free(&buf); /* the ABI allows NULL for empty output; the host skips qmt_free */
    *out = buf.data;
    *out_len = buf.len;
    return rc;
}

QMT_API void qmt_free(uint8_t *ptr, size_t len) {
    (void)len;
    free(ptr);
}

/* Moves a host-owned buffer into `out` and gives it back to the host. A failure without text still
   needs a message for the operation to report. */
static int32_t take_host_buffer(int32_t rc, uint8_t *p, size_t n, const char *function, qmt_buf *out) {
    qmt_buf_reset(out);
    if (n) qmt_buf_put(out, p, n);
    if (p && host->free_buf) host->free_buf(host->ctx, p, n);
    if (rc != 0 && out->len == 0) qmt_buf_printf(out, "%s failed in the host (code %d)", function, (int)rc);
    return rc;
}

typedef int32_t (*host_fn_out)(void *, const uint8_t *, size_t, uint8_t **, size_t *);

static int32_t call_host(host_fn_out fn, const char *function, qmt_slice in, qmt_buf *out) {
    if (!host || !fn) {
        qmt_buf_reset(out);
        qmt_buf_printf(out, "%s: the host does not provide this function", function);
        return -1;
    }
    uint8_t *p = NULL;
    size_t n = 0;
    int32_t rc = fn(host->ctx, in.data, in.len, &p, &n);
    return take_host_buffer(rc, p, n, function, out);
}

int32_t qmt_http_request(qmt_slice request_json, qmt_buf *response_json) {
    return call_host(host ? host->http_request : NULL, "qmt_http_request", request_json, response_json);
}

int32_t qmt_http_stream_open(qmt_slice request_json, qmt_buf *result_json) {
    return call_host(host ? host->http_stream_open : NULL, "qmt_http_stream_open", request_json, result_json);
}

int32_t qmt_http_stream_next(int64_t stream_id, qmt_buf *chunk) {
    char text[24];
    return call_host(host ? host->http_stream_next : NULL, "qmt_http_stream_next", stream_id_text(stream_id, text),
                     chunk);
}

void qmt_http_stream_close(int64_t stream_id) {
    char text[24];
    qmt_slice id = stream_id_text(stream_id, text);
    if (host && host->http_stream_close) host->http_stream_close(host->ctx, id.data, id.len);
}

void qmt_yield_chunk(qmt_slice chunk_json) {
    if (host && host->yield_chunk) host->yield_chunk(host->ctx, chunk_json.data, chunk_json.len);
}

static void send_log_record(qmt_slice record) {
    if (host && host->log) host->log(host->ctx, record.data, record.len);
}

char *qmt_config_get(const char *key) {
    const char *value = key && *key ? getenv(key) : NULL;
    if (!value) return NULL;
    size_t n = strlen(value) + 1;
    char *copy = malloc(n);
    if (copy) memcpy(copy, value, n);
    return copy;
}

#endif

/*
 * querymt_plugin.h - the querymt-jupyter C plugin SDK.
 *
 * One C source file, two builds:
 *   - Wasm (Extism):  zig cc --target=wasm32-wasi -mexec-model=reactor ...  -> plugin.wasm
 *     Every operation becomes an Extism export of the same name; the host functions are the
 *     `extism:host/user` imports of QueryMT's wire spec (section 8).
 *   - Native:         zig cc -shared -fPIC ...                              -> plugin.so / .dylib / .dll
 *     The library exports the querymt-jupyter native ABI v1 (qmt_abi_version, qmt_exports, qmt_init,
 *     qmt_call, qmt_free); see native-abi.md.
 * The operation functions are the same in both builds: bytes in, bytes out, same JSON.
 *
 * A plugin lists its operations once, with an X-macro, and defines the plugin with QMT_PLUGIN:
 *
 *     QMT_TEXT_OP(op_name, "echo")
 *     static int32_t op_chat(qmt_slice in, qmt_buf *out) { ... }
 *     ...
 *     #define ECHO_OPS(X) X(name, op_name) X(chat, op_chat) X(chat_stream, op_chat_stream)
 *     QMT_PLUGIN(ECHO_OPS)
 *
 * Define QMT_THREAD_SAFE before including this header when the operations keep no shared mutable
 * state: the native build then lists "qmt:thread_safe" and the host may call it from many threads.
 * (The Wasm build is always called one call at a time per instance.)
 */
#ifndef QUERYMT_PLUGIN_H
#define QUERYMT_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define QMT_ABI_VERSION 1

#if defined(__wasm__)
#define QMT_TARGET_WASM 1
#else
#define QMT_TARGET_NATIVE 1
#endif

/* ---- bytes ------------------------------------------------------------------------------------ */

/* A read-only view of bytes (not NUL-terminated). */
typedef struct {
    const uint8_t *data;
    size_t len;
} qmt_slice;

/* A growable, malloc-backed byte buffer. Zero-initialise it ({0}); release with qmt_buf_free.
   The data is always kept NUL-terminated (the NUL is not counted in len) so it can be read as text. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} qmt_buf;

void qmt_buf_put(qmt_buf *b, const void *p, size_t n);
void qmt_buf_puts(qmt_buf *b, const char *s);
void qmt_buf_putc(qmt_buf *b, char c);
void qmt_buf_printf(qmt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qmt_buf_vprintf(qmt_buf *b, const char *fmt, va_list ap);
void qmt_buf_reset(qmt_buf *b); /* len = 0, keeps the allocation */
void qmt_buf_free(qmt_buf *b);
qmt_slice qmt_buf_slice(const qmt_buf *b);
qmt_slice qmt_cstr(const char *s);

/* ---- operations ------------------------------------------------------------------------------ */

/* An operation reads `in` and appends its output to `out` (which starts empty). It returns
     0   success, `out` is the output;
     1   structured error, `out` is {"payload": <LLMErrorPayload>} (use qmt_fail);
     -1  (any other non-zero) unstructured error, `out` is UTF-8 text. */
typedef int32_t (*qmt_op_fn)(qmt_slice in, qmt_buf *out);

/* Defines the operation `static int32_t fn(qmt_slice in, qmt_buf *out)` that ignores its input and
   replies `text`: the constant answers every provider gives (name, base_url, supports_streaming, a
   fixed list_models or config_schema). */
#define QMT_TEXT_OP(fn, text)                                                                               \
    static int32_t fn(qmt_slice in, qmt_buf *out) {                                                         \
        (void)in;                                                                                           \
        qmt_buf_puts(out, text);                                                                            \
        return 0;                                                                                           \
    }

/* Ready-made operations for the ops list: qmt_op_empty replies nothing (api_key_name of a provider that
   needs no key, a no-op to time the boundary); qmt_op_echo replies with its input (from_config of a
   provider that keeps its config as sent). */
int32_t qmt_op_empty(qmt_slice in, qmt_buf *out);
int32_t qmt_op_echo(qmt_slice in, qmt_buf *out);

/* Replace `out` with {"payload":{"type":<type>,"message":<formatted>}} and return 1.
   `type` is an LLMErrorPayload type with a single `message` field (wire spec 5.3), e.g.
   "invalid_request", "json_error", "not_implemented", "plugin_error". */
int32_t qmt_fail(qmt_buf *out, const char *type, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- host functions (wire spec section 8; native-abi.md "Host callbacks") ------------------- */

/* Each returns 0 on success. A non-zero return means the host refused or failed; `out` then holds the
   host's error text, and the operation should fail (return -1 with that text).
   The output buffer is reset first (its previous content is replaced), so one buffer can be reused in a
   qmt_http_stream_next loop. In the Wasm build a Python host cannot trap the guest: it answers refusals in
   data (a 403 response, {"status":"error",...}, end of stream), so there these return non-zero only when
   the host hands back nothing at all where a result is required. */
int32_t qmt_http_request(qmt_slice request_json, qmt_buf *response_json);
int32_t qmt_http_stream_open(qmt_slice request_json, qmt_buf *result_json);
int32_t qmt_http_stream_next(int64_t stream_id, qmt_buf *chunk); /* chunk->len == 0: end of stream */
void qmt_http_stream_close(int64_t stream_id);
void qmt_yield_chunk(qmt_slice chunk_json);
/* Sends an ExtismLogRecord {"level","target","message"}; level 1 error .. 5 trace. Records above the
   level set by qmt_set_log_level (default 0: off) are not sent. */
void qmt_log(int level, const char *target, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void qmt_set_log_level(int level);

/* ---- config (Extism manifest config in the Wasm build, the process environment natively) ------ */

/* Returns a malloc'd NUL-terminated value, or NULL when the key is absent. */
char *qmt_config_get(const char *key);

/* ---- defining the plugin --------------------------------------------------------------------- */

#if defined(QMT_TARGET_WASM)
int32_t qmt__wasm_run(qmt_op_fn fn);
#define QMT__WASM_EXPORT(name, fn) \
    __attribute__((export_name(#name))) int32_t qmt__export_##name(void) { return qmt__wasm_run(fn); }
#define QMT_PLUGIN(OPS) OPS(QMT__WASM_EXPORT)
#else
/* ---- native ABI v1 (native-abi.md) --------------------------------------------------------------- */

struct qmt_host_v1 {
    uint32_t abi_version; /* 1 */
    void *ctx;            /* passed back unchanged on every callback */
    /* The six Wasm host functions (wire spec section 8), same input and output bytes. A callback that
       returns bytes sets *out and *out_len to a buffer the plugin releases with free_buf. Return 0 on success;
       non-zero is a host-function error, with its text in *out. */
    int32_t (*http_request)(void *ctx, const uint8_t *req, size_t len, uint8_t **out, size_t *out_len);
    int32_t (*http_stream_open)(void *ctx, const uint8_t *req, size_t len, uint8_t **out, size_t *out_len);
    int32_t (*http_stream_next)(void *ctx, const uint8_t *id, size_t len, uint8_t **out, size_t *out_len);
    /* *out_len == 0 means end of stream */
    int32_t (*http_stream_close)(void *ctx, const uint8_t *id, size_t len);
    int32_t (*yield_chunk)(void *ctx, const uint8_t *chunk, size_t len);
    int32_t (*log)(void *ctx, const uint8_t *record, size_t len);
    void (*free_buf)(void *ctx, uint8_t *ptr, size_t len);
};

/* Exported by querymt_plugin.c; the host looks these up with dlsym. */
uint32_t qmt_abi_version(void);
const char *qmt_exports(void);
int32_t qmt_init(const struct qmt_host_v1 *host);
int32_t qmt_call(const char *op, const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len);
void qmt_free(uint8_t *ptr, size_t len);

typedef struct {
    const char *name;
    qmt_op_fn fn;
} qmt__op;
/* Defined by QMT_PLUGIN in the plugin's source, read by querymt_plugin.c. */
extern const qmt__op qmt__ops[];
extern const char qmt__exports_json[];
#define QMT__NATIVE_ENTRY(name, fn) {#name, fn},
#define QMT__NATIVE_NAME(name, fn) "\"" #name "\","
#ifdef QMT_THREAD_SAFE
#define QMT__THREAD_SAFE_NAME "\"qmt:thread_safe\","
#else
#define QMT__THREAD_SAFE_NAME ""
#endif
/* qmt_exports() must be valid JSON: the trailing comma is closed by a sentinel entry. */
#define QMT_PLUGIN(OPS)                                                                                \
    const qmt__op qmt__ops[] = {OPS(QMT__NATIVE_ENTRY){0, 0}};                                        \
    const char qmt__exports_json[] = "[" OPS(QMT__NATIVE_NAME) QMT__THREAD_SAFE_NAME "\"qmt:abi_v1\"]";
#endif

#endif /* QUERYMT_PLUGIN_H */

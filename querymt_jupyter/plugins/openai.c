/*
 * openai.c - the bundled `openai` provider, a generation-A QueryMT plugin.
 *
 * It answers the export catalogue of QueryMT's `impl_extism_http_plugin!` macro (wire spec section 6):
 * the host sends every HTTP request this plugin builds and hands the raw response back to be parsed
 * (section 6.1). One source, two builds: querymt_jupyter.build.build_plugin(kind="wasm" | "native").
 *
 * Upstream is the OpenAI Chat Completions API (and the servers that imitate it): /chat/completions,
 * /completions, /embeddings and /models under `base_url`.
 *
 * Error convention (wire spec 5.2): inputs that do not decode and configs that do not validate fail
 * with code 1 `json_error`; responses that do not have OpenAI's shape fail with code 1
 * `response_format_error`. Nothing here traps on malformed input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmt_json.h"
#include "querymt_plugin.h"

#define PLUGIN_NAME "openai"
#define DEFAULT_BASE_URL "https://api.openai.com/v1/"
#define API_KEY_NAME "OPENAI_API_KEY"
#define LOG_TARGET "qmt_openai"
/* Error messages and raw_response quoted from response bodies are cut here: an HTML error page from
   a proxy should not become a 100 kB exception message. */
#define MAX_QUOTED_BYTES 2000

/* ==== JSON writing helpers ====================================================================== */

/* Places the commas of one JSON array or object being written. */
typedef struct {
    qmt_buf *b;
    int n;
} jlist;

static void jsep(jlist *l) {
    if (l->n++)
        qmt_buf_putc(l->b, ',');
}

/* Writes `"key":` (keys here are constant ASCII identifiers, no escaping needed). */
static void jkey(jlist *l, const char *key) {
    jsep(l);
    qmt_buf_putc(l->b, '"');
    qmt_buf_puts(l->b, key);
    qmt_buf_puts(l->b, "\":");
}

/* Writes text from upstream as a JSON string, keeping at most `limit` bytes, cut on a character
   boundary (qmt_json_write_string turns invalid UTF-8 into U+FFFD). */
static void write_text(qmt_buf *b, const char *s, size_t n, size_t limit) {
    if (n > limit) {
        n = limit;
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    qmt_json_write_string(b, s, n);
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int ascii_caseless_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b + 32) : *b;
        if (x != y)
            return 0;
    }
    return *a == *b;
}

static void write_upstream_string(qmt_buf *b, const qmt_json *v) {
    qmt_json_write_string(b, v->str, v->len);
}

/* Re-serialises a parsed value compactly, as serde_json::to_string does (numbers keep their spelling). */
static void write_compact(qmt_buf *b, const qmt_json *v) {
    jlist l = {b, 0};
    switch (v->type) {
    case QMT_JSON_NULL:
        qmt_buf_puts(b, "null");
        return;
    case QMT_JSON_FALSE:
        qmt_buf_puts(b, "false");
        return;
    case QMT_JSON_TRUE:
        qmt_buf_puts(b, "true");
        return;
    case QMT_JSON_NUMBER:
        qmt_buf_put(b, v->raw.data, v->raw.len);
        return;
    case QMT_JSON_STRING:
        write_upstream_string(b, v);
        return;
    case QMT_JSON_ARRAY:
        qmt_buf_putc(b, '[');
        qmt_json_foreach(item, v) {
            jsep(&l);
            write_compact(b, item);
        }
        qmt_buf_putc(b, ']');
        return;
    case QMT_JSON_OBJECT:
        qmt_buf_putc(b, '{');
        qmt_json_foreach(member, v) {
            jsep(&l);
            qmt_json_write_string(b, member->key, strlen(member->key));
            qmt_buf_putc(b, ':');
            write_compact(b, member);
        }
        qmt_buf_putc(b, '}');
        return;
    }
}

/* Writes an f32 the way serde_json does (ryu): the shortest digits that read back as the same f32,
   always with a fraction or an exponent ("1.0", "0.25", "1e-7", "1.5e20"). QueryMT's wire types hold
   temperatures, top_p and embeddings as f32, so this is how the real plugin's output looks. */
static void write_f32(qmt_buf *b, double x) {
    float f = (float)x;
    char sci[32];
    char digits[16];
    int nd = 0;
    int exp10;
    if (!isfinite(f)) {
        qmt_buf_puts(b, "null");
        return;
    }
    if (f == 0.0f) {
        qmt_buf_puts(b, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    for (int precision = 1; precision <= 9; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision - 1, (double)f);
        if (strtof(sci, NULL) == f)
            break;
    }
    /* sci is "[-]d[.ddd]e[+-]xx": collect the digits and the exponent */
    const char *p = sci;
    if (*p == '-') {
        qmt_buf_putc(b, '-');
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int point = exp10 + 1; /* the decimal point sits after `point` digits */
    if (point > 0 && point <= 13) {
        for (int i = 0; i < (nd > point ? nd : point); i++) {
            if (i == point)
                qmt_buf_putc(b, '.');
            qmt_buf_putc(b, i < nd ? digits[i] : '0');
        }
        if (nd <= point)
            qmt_buf_puts(b, ".0");
    } else if (point <= 0 && point > -6) {
        qmt_buf_puts(b, "0.");
        for (int i = point; i < 0; i++)
            qmt_buf_putc(b, '0');
        qmt_buf_put(b, digits, (size_t)nd);
    } else {
        qmt_buf_putc(b, digits[0]);
        if (nd > 1) {
            qmt_buf_putc(b, '.');
            qmt_buf_put(b, digits + 1, (size_t)nd - 1);
        }
        qmt_buf_printf(b, "e%d", exp10);
    }
}

static void write_uint(qmt_buf *b, double x) {
    qmt_buf_printf(b, "%.0f", x);
}

static const char BASE64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void write_base64(qmt_buf *b, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char quad[4] = {BASE64[(v >> 18) & 63], BASE64[(v >> 12) & 63], i + 1 < n ? BASE64[(v >> 6) & 63] : '=',
                        i + 2 < n ? BASE64[v & 63] : '='};
        qmt_buf_put(b, quad, 4);
    }
}

/* Decodes standard base64 (padding optional). Returns 0, or -1 on a character outside the alphabet. */
static int decode_base64(const char *s, size_t n, qmt_buf *out) {
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *hit = s[i] ? strchr(BASE64, s[i]) : NULL;
        if (!hit)
            return -1;
        acc = (acc << 6) | (uint32_t)(hit - BASE64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            qmt_buf_putc(out, (char)((acc >> bits) & 0xFF));
        }
    }
    return 0;
}

/* ==== errors ==================================================================================== */

/* {"payload":{"type":"response_format_error","message":...,"raw_response":...}}, code 1. */
static int32_t fail_format(qmt_buf *out, const char *message, const qmt_buf *raw) {
    qmt_buf_reset(out);
    qmt_buf_puts(out, "{\"payload\":{\"type\":\"response_format_error\",\"message\":");
    qmt_json_write_cstr(out, message);
    qmt_buf_puts(out, ",\"raw_response\":");
    write_text(out, raw ? (const char *)raw->data : NULL, raw ? raw->len : 0, MAX_QUOTED_BYTES);
    qmt_buf_puts(out, "}}");
    return 1;
}

/* ==== input documents =========================================================================== */

typedef struct {
    qmt_json_doc doc;
    qmt_json *root;
} document;

/* Parses `bytes` into d; on failure fills `out` with a json_error naming `what` and returns 1. */
static int32_t parse_document(document *d, qmt_slice bytes, const char *what, qmt_buf *out) {
    char err[160] = "";
    memset(d, 0, sizeof *d);
    d->root = qmt_json_parse(bytes, &d->doc, err, sizeof err);
    if (!d->root)
        return qmt_fail(out, "json_error", "%s is not valid JSON: %s", what, err);
    return 0;
}

static int is_string(const qmt_json *v) {
    return v && v->type == QMT_JSON_STRING;
}

static int is_type(const qmt_json *v, qmt_json_type type) {
    return v && v->type == type;
}

static int str_eq(const qmt_json *v, const char *s) {
    return is_string(v) && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

/* A JSON integer in [0, max], or -1. */
static double integer_or_minus1(const qmt_json *v, double max) {
    if (!is_type(v, QMT_JSON_NUMBER) || v->num < 0 || v->num > max || v->num != floor(v->num))
        return -1;
    return v->num;
}

/* ==== configuration ============================================================================= */

enum field {
    F_API_KEY,
    F_BASE_URL,
    F_MODEL,
    F_MAX_TOKENS,
    F_TEMPERATURE,
    F_TOP_P,
    F_SYSTEM,
    F_STREAM,
    F_TIMEOUT_SECONDS,
    F_TOOL_CHOICE,
    F_EMBEDDING_DIMENSIONS,
    F_EMBEDDING_ENCODING_FORMAT,
    F_REASONING_EFFORT,
    F_COUNT
};

enum kind { K_STRING, K_URL, K_UINT, K_FLOAT, K_BOOL, K_STRINGS, K_TOOL_CHOICE, K_EFFORT, K_ENCODING };

/* One table drives both validation (from_config and every typed cfg) and config_schema. */
static const struct {
    const char *name;
    enum kind kind;
    const char *description;
} FIELDS[F_COUNT] = {
    [F_API_KEY] = {"api_key", K_STRING,
                   "API key, sent as `Authorization: Bearer <key>` when non-empty. The host fills it from "
                   "$OPENAI_API_KEY when absent."},
    [F_BASE_URL] = {"base_url", K_URL,
                    "API base URL that endpoint paths are appended to. Default: https://api.openai.com/v1/"},
    [F_MODEL] = {"model", K_STRING, "Model id, e.g. gpt-4o-mini. Required for chat, embeddings and completions."},
    [F_MAX_TOKENS] = {"max_tokens", K_UINT, "Maximum number of tokens to generate."},
    [F_TEMPERATURE] = {"temperature", K_FLOAT, "Sampling temperature, 0 to 2."},
    [F_TOP_P] = {"top_p", K_FLOAT, "Nucleus sampling: the probability mass of the tokens considered."},
    [F_SYSTEM] = {"system", K_STRINGS, "System prompts, sent in this order as leading system messages."},
    [F_STREAM] = {"stream", K_BOOL, "Whether the caller prefers streamed chat responses."},
    [F_TIMEOUT_SECONDS] = {"timeout_seconds", K_UINT, "Request timeout in seconds (applied by the host)."},
    [F_TOOL_CHOICE] = {"tool_choice", K_TOOL_CHOICE,
                       "How the model may use tools: \"auto\", \"required\", \"none\", or "
                       "{\"type\":\"function\",\"function\":{\"name\":...}}. Sent only with tools."},
    [F_EMBEDDING_DIMENSIONS] = {"embedding_dimensions", K_UINT,
                                "Length of the embedding vectors (text-embedding-3 models)."},
    [F_EMBEDDING_ENCODING_FORMAT] = {"embedding_encoding_format", K_ENCODING,
                                     "Wire format of embeddings: float (default) or base64. Results are floats "
                                     "either way."},
    [F_REASONING_EFFORT] = {"reasoning_effort", K_EFFORT,
                            "Reasoning effort for reasoning models: low, medium, high, or max (sent as xhigh)."},
};

/* The JSON Schema members of each kind. Every key is optional and null means absent, as for the
   Option<...> fields of a serde config. tool_choice has no top-level "properties", so the host's
   schema pruning (wire spec 3) keeps its object value whole. */
static const char *const KIND_SCHEMA[] = {
    [K_STRING] = "\"type\":[\"string\",\"null\"]",
    [K_URL] = "\"type\":[\"string\",\"null\"],\"format\":\"uri\"",
    [K_UINT] = "\"type\":[\"integer\",\"null\"],\"format\":\"uint32\",\"minimum\":0",
    [K_FLOAT] = "\"type\":[\"number\",\"null\"],\"format\":\"float\"",
    [K_BOOL] = "\"type\":[\"boolean\",\"null\"]",
    [K_STRINGS] = "\"type\":[\"array\",\"null\"],\"items\":{\"type\":\"string\"}",
    [K_TOOL_CHOICE] = "\"anyOf\":[{\"type\":\"string\",\"enum\":[\"auto\",\"required\",\"none\"]},"
                      "{\"type\":\"object\",\"properties\":{\"type\":{\"type\":\"string\",\"const\":\"function\"},"
                      "\"function\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},"
                      "\"required\":[\"name\"]}},\"required\":[\"type\",\"function\"]},{\"type\":\"null\"}]",
    [K_EFFORT] = "\"type\":[\"string\",\"null\"],\"enum\":[\"low\",\"medium\",\"high\",\"max\",null]",
    [K_ENCODING] = "\"type\":[\"string\",\"null\"],\"enum\":[\"float\",\"base64\",null]",
};

/* A validated cfg: each slot is the member's value, or NULL when absent or null. */
typedef struct {
    const qmt_json *v[F_COUNT];
} config;

static int one_of(const qmt_json *v, const char *const *options) {
    for (; *options; options++)
        if (str_eq(v, *options))
            return 1;
    return 0;
}

/* Header values and URLs must be visible ASCII (http-serde-ext refuses anything else). */
static int visible_ascii(const qmt_json *v) {
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->str[i] < 0x20 || (unsigned char)v->str[i] > 0x7E)
            return 0;
    return 1;
}

static int http_url(const qmt_json *v) {
    size_t skip;
    if (!is_string(v) || !visible_ascii(v) || memchr(v->str, ' ', v->len))
        return 0;
    if (v->len > 8 && strncmp(v->str, "https://", 8) == 0)
        skip = 8;
    else if (v->len > 7 && strncmp(v->str, "http://", 7) == 0)
        skip = 7;
    else
        return 0;
    return v->str[skip] != '/';
}

static int tool_choice_ok(const qmt_json *v) {
    static const char *const modes[] = {"auto", "required", "none", NULL};
    const qmt_json *function = qmt_json_get(v, "function");
    if (is_string(v))
        return one_of(v, modes);
    return str_eq(qmt_json_get(v, "type"), "function") && is_string(qmt_json_get(function, "name"));
}

/* NULL when v is a valid value of `kind`, else what was expected. */
static const char *kind_problem(enum kind kind, const qmt_json *v) {
    static const char *const efforts[] = {"low", "medium", "high", "max", NULL};
    static const char *const encodings[] = {"float", "base64", NULL};
    switch (kind) {
    case K_STRING:
        return is_string(v) ? NULL : "a string";
    case K_URL:
        return http_url(v) ? NULL : "an http:// or https:// URL";
    case K_UINT:
        return integer_or_minus1(v, 4294967295.0) >= 0 ? NULL : "a non-negative integer";
    case K_FLOAT:
        return is_type(v, QMT_JSON_NUMBER) && isfinite(v->num) ? NULL : "a number";
    case K_BOOL:
        return is_type(v, QMT_JSON_TRUE) || is_type(v, QMT_JSON_FALSE) ? NULL : "true or false";
    case K_STRINGS:
        if (!is_type(v, QMT_JSON_ARRAY))
            return "an array of strings";
        qmt_json_foreach(item, v) if (!is_string(item)) return "an array of strings";
        return NULL;
    case K_TOOL_CHOICE:
        return tool_choice_ok(v) ? NULL : "\"auto\", \"required\", \"none\" or {\"type\":\"function\",\"function\":{\"name\":...}}";
    case K_EFFORT:
        return one_of(v, efforts) ? NULL : "one of low, medium, high, max";
    case K_ENCODING:
        return one_of(v, encodings) ? NULL : "float or base64";
    }
    return "a valid value";
}

static int field_index(const char *name) {
    for (int f = 0; f < F_COUNT; f++)
        if (strcmp(FIELDS[f].name, name) == 0)
            return f;
    return -1;
}

static void list_field_names(qmt_buf *b) {
    for (int f = 0; f < F_COUNT; f++)
        qmt_buf_printf(b, "%s`%s`", f ? ", " : "", FIELDS[f].name);
}

/* Validates cfg like a deny-unknown-fields serde struct. On failure fills `out` (json_error, naming
   the key) and returns 1. */
static int32_t config_load(const qmt_json *cfg, config *c, qmt_buf *out) {
    int seen[F_COUNT] = {0};
    memset(c, 0, sizeof *c);
    if (!is_type(cfg, QMT_JSON_OBJECT))
        return qmt_fail(out, "json_error", "the provider config must be a JSON object");
    qmt_json_foreach(member, cfg) {
        int f = field_index(member->key);
        if (f < 0) {
            qmt_buf names = {0};
            list_field_names(&names);
            qmt_fail(out, "json_error", "unknown field `%s` in the openai config, expected one of %s", member->key,
                     (const char *)names.data);
            qmt_buf_free(&names);
            return 1;
        }
        if (seen[f]++)
            return qmt_fail(out, "json_error", "duplicate field `%s` in the openai config", member->key);
        if (member->type == QMT_JSON_NULL)
            continue;
        const char *problem = kind_problem(FIELDS[f].kind, member);
        if (problem)
            return qmt_fail(out, "json_error", "invalid value for `%s` in the openai config: expected %s",
                            member->key, problem);
        if (f == F_API_KEY && !visible_ascii(member))
            return qmt_fail(out, "json_error", "`api_key` may only contain printable ASCII characters");
        c->v[f] = member;
    }
    return 0;
}

/* Reads and validates the "cfg" member of a request wrapper. */
static int32_t config_from(const qmt_json *wrapper, config *c, qmt_buf *out) {
    const qmt_json *cfg = qmt_json_get(wrapper, "cfg");
    if (!cfg)
        return qmt_fail(out, "json_error", "missing field `cfg`");
    return config_load(cfg, c, out);
}

static int32_t require_model(const config *c, qmt_buf *out) {
    if (!c->v[F_MODEL] || c->v[F_MODEL]->len == 0)
        return qmt_fail(out, "invalid_request", "the openai config has no `model`; set one, e.g. \"gpt-4o-mini\"");
    return 0;
}

/* ==== HTTP requests (wire spec 7.7) ============================================================= */

/* Where and how to send: base URL and key are plain text slices of the cfg (or the defaults). */
typedef struct {
    const char *base;
    size_t base_len;
    const char *key;
    size_t key_len;
} endpoint;

static endpoint endpoint_of(const config *c) {
    endpoint e = {DEFAULT_BASE_URL, strlen(DEFAULT_BASE_URL), "", 0};
    if (c->v[F_BASE_URL]) {
        e.base = c->v[F_BASE_URL]->str;
        e.base_len = c->v[F_BASE_URL]->len;
    }
    if (c->v[F_API_KEY]) {
        e.key = c->v[F_API_KEY]->str;
        e.key_len = c->v[F_API_KEY]->len;
    }
    return e;
}

/* Writes {"req":{"head":{...},"body":[...]}}. The URL is base_url + "/" + path whether or not
   base_url ends in a slash (Url::join would drop a last segment without one: ".../v1" + "models"). */
static void write_request(qmt_buf *out, const char *method, const endpoint *e, const char *path, const qmt_buf *body) {
    qmt_buf uri = {0};
    size_t base_len = e->base_len;
    while (base_len && e->base[base_len - 1] == '/')
        base_len--;
    qmt_buf_put(&uri, e->base, base_len);
    qmt_buf_putc(&uri, '/');
    qmt_buf_puts(&uri, path);

    qmt_buf_puts(out, "{\"req\":{\"head\":{\"method\":");
    qmt_json_write_cstr(out, method);
    qmt_buf_puts(out, ",\"uri\":");
    qmt_json_write_string(out, (const char *)uri.data, uri.len);
    /* header order as the real plugin inserts them (golden serializable_http_request_get_empty_body) */
    qmt_buf_puts(out, ",\"headers\":{\"content-type\":\"application/json\"");
    if (e->key_len) {
        qmt_buf_puts(out, ",\"authorization\":\"Bearer ");
        qmt_buf_put(out, e->key, e->key_len); /* visible ASCII, checked by config_load */
        qmt_buf_putc(out, '"');
    }
    qmt_buf_puts(out, "},\"version\":\"HTTP/1.1\"},\"body\":");
    qmt_json_write_bytes(out, body ? body->data : NULL, body ? body->len : 0);
    qmt_buf_puts(out, "}}");
    qmt_buf_free(&uri);
}

/* ==== HTTP responses ============================================================================ */

typedef struct {
    int status;
    const qmt_json *headers; /* name -> string | [string, ...] */
    qmt_buf body;
} http_response;

/* Decodes a SerializableHttpResponse ({"resp":{head, body}}, or {"resp":[head, body]}). */
static int32_t response_read(const qmt_json *wrapper, http_response *r, qmt_buf *out) {
    const qmt_json *inner = qmt_json_get(wrapper, "resp");
    const qmt_json *head = qmt_json_get(inner, "head");
    const qmt_json *body = qmt_json_get(inner, "body");
    double status;
    memset(r, 0, sizeof *r);
    if (is_type(inner, QMT_JSON_ARRAY) && inner->len == 2) {
        head = qmt_json_at(inner, 0);
        body = qmt_json_at(inner, 1);
    }
    if (!head || !body)
        return qmt_fail(out, "json_error", "missing field `resp.resp.head` or `resp.resp.body`");
    status = integer_or_minus1(qmt_json_get(head, "status"), 999);
    if (status < 100)
        return qmt_fail(out, "json_error", "`status` must be an integer HTTP status code");
    r->status = (int)status;
    r->headers = qmt_json_get(head, "headers");
    if (qmt_json_bytes(body, &r->body) != 0)
        return qmt_fail(out, "json_error", "the response body must be an array of byte values");
    return 0;
}

/* The first value of a response header, or NULL. Names are lowercase on the wire; compare loosely. */
static const qmt_json *header_value(const http_response *r, const char *name) {
    qmt_json_foreach(h, r->headers) {
        if (!ascii_caseless_eq(h->key, name))
            continue;
        return is_type(h, QMT_JSON_ARRAY) ? qmt_json_at(h, 0) : h;
    }
    return NULL;
}

static int success(const http_response *r) {
    return r->status >= 200 && r->status < 300;
}

/* ==== error classification (wire spec 5.3 / 5.4) ================================================ */

/* Seconds, rounding any fraction up (a sub-second hint means "retry after 1 s"); -1 if not positive. */
static long ceil_seconds(double secs) {
    if (!(secs > 0) || secs > 1e9)
        return -1;
    return (long)ceil(secs);
}

/* Parses a duration such as "1m30s", "6.5s" or "250ms" (x-ratelimit-reset-*). Returns -1 if malformed. */
static double parse_duration(const char *s) {
    double total = 0;
    if (!*s)
        return -1;
    while (*s) {
        char *end;
        double n = strtod(s, &end);
        if (end == s)
            return -1;
        if (strncmp(end, "ms", 2) == 0)
            total += n / 1000, s = end + 2;
        else if (*end == 'h')
            total += n * 3600, s = end + 1;
        else if (*end == 'm')
            total += n * 60, s = end + 1;
        else if (*end == 's')
            total += n, s = end + 1;
        else
            return -1;
    }
    return total;
}

/* A header holding a plain number (seconds, or milliseconds with scale 0.001); -1 otherwise. */
static double header_number(const http_response *r, const char *name, double scale) {
    const qmt_json *v = header_value(r, name);
    char *end;
    double n;
    if (!is_string(v) || v->len == 0)
        return -1;
    n = strtod(v->str, &end);
    return *end == '\0' ? n * scale : -1;
}

/* retry_after_secs, from the first source that has it (same order as the host's classifier).
   An HTTP-date Retry-After is not understood (a plugin has no trustworthy clock): it falls through. */
static long retry_after(const http_response *r, const qmt_json *body) {
    static const char *const body_keys[] = {"retry_after", "retry_after_secs"};
    const qmt_json *reset = header_value(r, "x-ratelimit-reset-requests");
    const qmt_json *error = qmt_json_get(body, "error");
    long secs = ceil_seconds(header_number(r, "retry-after", 1));
    if (secs < 0)
        secs = ceil_seconds(header_number(r, "retry-after-ms", 0.001));
    if (secs < 0 && is_string(reset))
        secs = ceil_seconds(parse_duration(reset->str));
    for (int scope = 0; scope < 2 && secs < 0; scope++)
        for (size_t k = 0; k < 2 && secs < 0; k++) {
            const qmt_json *v = qmt_json_get(scope == 0 ? error : body, body_keys[k]);
            if (is_type(v, QMT_JSON_NUMBER))
                secs = ceil_seconds(v->num);
        }
    return secs;
}

static void write_optional_secs(qmt_buf *b, long secs) {
    if (secs < 0)
        qmt_buf_puts(b, "null");
    else
        qmt_buf_printf(b, "%ld", secs);
}

/* The message of an error response: OpenAI's error.message, else the trimmed body, else "HTTP <code>". */
static void write_error_message(qmt_buf *b, const http_response *r, const qmt_json *body) {
    const qmt_json *error = qmt_json_get(body, "error");
    const qmt_json *message = is_string(error) ? error : qmt_json_get(error, "message");
    const char *text = (const char *)r->body.data;
    size_t start = 0, end = r->body.len;
    if (is_string(message) && message->len) {
        write_upstream_string(b, message);
        return;
    }
    while (start < end && is_space(text[start]))
        start++;
    while (end > start && is_space(text[end - 1]))
        end--;
    if (end > start) {
        write_text(b, text + start, end - start, MAX_QUOTED_BYTES);
        return;
    }
    qmt_buf_printf(b, "\"HTTP %d\"", r->status);
}

/* OpenAI's error codes and types, mapped onto QueryMT's provider_error kinds; NULL if unknown. */
static const char *provider_kind(const qmt_json *error) {
    static const struct {
        const char *token;
        const char *kind;
    } table[] = {
        {"rate_limit_exceeded", "rate_limited"},     {"requests", "rate_limited"},
        {"tokens", "rate_limited"},                  {"insufficient_quota", "quota_exceeded"},
        {"context_length_exceeded", "context_window_exceeded"},
        {"server_is_overloaded", "server_overloaded"}, {"slow_down", "server_overloaded"},
        {"invalid_api_key", "authentication"},       {"authentication_error", "authentication"},
        {"invalid_request_error", "invalid_request"}, {"server_error", "unknown_transient"},
    };
    const qmt_json *tokens[2] = {qmt_json_get(error, "code"), qmt_json_get(error, "type")};
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
            if (str_eq(tokens[t], table[i].token))
                return table[i].kind;
    return NULL;
}

/* Writes the optional provider_error details: kind, code, error_type, request_id. */
static void write_provider_details(jlist *l, const qmt_json *error, const qmt_json *request_id) {
    const char *kind = provider_kind(error);
    const qmt_json *code = qmt_json_get(error, "code");
    const qmt_json *type = qmt_json_get(error, "type");
    if (kind) {
        jkey(l, "kind");
        qmt_json_write_cstr(l->b, kind);
    }
    if (is_string(code) || is_type(code, QMT_JSON_NUMBER)) {
        jkey(l, "code");
        if (is_string(code))
            write_upstream_string(l->b, code);
        else
            qmt_json_write_string(l->b, (const char *)code->raw.data, code->raw.len);
    }
    if (is_string(type)) {
        jkey(l, "error_type");
        write_upstream_string(l->b, type);
    }
    if (is_string(request_id)) {
        jkey(l, "request_id");
        write_upstream_string(l->b, request_id);
    }
}

/* Replaces `out` with the PluginError for a non-2xx response:
   401/403 auth_error, 429 rate_limited, 400 invalid_request, 5xx http_status, 499 cancelled,
   anything else provider_error (with OpenAI's code and type when the body has them). */
static void classify_response(qmt_buf *out, const http_response *r) {
    document body;
    char err[8];
    jlist l = {out, 0};
    memset(&body, 0, sizeof body);
    body.root = qmt_json_parse(qmt_buf_slice(&r->body), &body.doc, err, sizeof err);
    long secs = retry_after(r, body.root);

    qmt_buf_reset(out);
    qmt_buf_puts(out, "{\"payload\":{");
    jkey(&l, "type");
    if (r->status == 499) {
        qmt_buf_puts(out, "\"cancelled\"");
    } else if (r->status == 401 || r->status == 403 || r->status == 400 || r->status == 429) {
        qmt_buf_puts(out, r->status == 429 ? "\"rate_limited\"" : r->status == 400 ? "\"invalid_request\"" : "\"auth_error\"");
        jkey(&l, "message");
        write_error_message(out, r, body.root);
        if (r->status == 429) {
            jkey(&l, "retry_after_secs");
            write_optional_secs(out, secs);
        }
    } else if (r->status >= 500) {
        qmt_buf_puts(out, "\"http_status\"");
        jkey(&l, "status_code");
        qmt_buf_printf(out, "%d", r->status);
        jkey(&l, "message");
        write_error_message(out, r, body.root);
        jkey(&l, "retry_after_secs");
        write_optional_secs(out, secs);
    } else {
        qmt_buf_puts(out, "\"provider_error\"");
        jkey(&l, "message");
        write_error_message(out, r, body.root);
        write_provider_details(&l, qmt_json_get(body.root, "error"), header_value(r, "x-request-id"));
    }
    qmt_buf_puts(out, "}}");
    qmt_json_doc_free(&body.doc);
}

/* Shared front half of the parse_* exports: decode {"cfg"?, "resp"}, turn a non-2xx response into
   its classified error (the host normally does that first), and parse the body as JSON. */
typedef struct {
    document input;
    config cfg;
    http_response resp;
    document body;
} parse_job;

static int32_t parse_job_begin(parse_job *job, qmt_slice in, int typed_cfg, qmt_buf *out) {
    char err[160] = "";
    int32_t rc;
    memset(job, 0, sizeof *job);
    if ((rc = parse_document(&job->input, in, "the parse request", out)))
        return rc;
    if (typed_cfg && (rc = config_from(job->input.root, &job->cfg, out)))
        return rc;
    if ((rc = response_read(qmt_json_get(job->input.root, "resp"), &job->resp, out)))
        return rc;
    if (!success(&job->resp)) {
        classify_response(out, &job->resp);
        return 1;
    }
    job->body.root = qmt_json_parse(qmt_buf_slice(&job->resp.body), &job->body.doc, err, sizeof err);
    if (!job->body.root) {
        char message[224];
        snprintf(message, sizeof message, "Failed to decode API response: %s", err);
        return fail_format(out, message, &job->resp.body);
    }
    return 0;
}

static void parse_job_end(parse_job *job) {
    qmt_json_doc_free(&job->body.doc);
    qmt_buf_free(&job->resp.body);
    qmt_json_doc_free(&job->input.doc);
}

/* ==== shared response pieces ==================================================================== */

static double count_of(const qmt_json *v) {
    double n = integer_or_minus1(v, 4294967295.0);
    return n < 0 ? 0 : n;
}

/* OpenAI usage -> QueryMT Usage. Like QueryMT's openai plugin, input_tokens excludes cached prompt
   tokens (reported as cache_read) and output_tokens excludes reasoning tokens. DeepSeek-style
   prompt_cache_hit_tokens count as cached too; QueryMT's own key names are accepted as well. */
static void write_usage(qmt_buf *b, const qmt_json *u) {
    const qmt_json *prompt = qmt_json_get(u, "prompt_tokens");
    const qmt_json *completion = qmt_json_get(u, "completion_tokens");
    double input = count_of(prompt ? prompt : qmt_json_get(u, "input_tokens"));
    double output = count_of(completion ? completion : qmt_json_get(u, "output_tokens"));
    double cached = fmax(count_of(qmt_json_get(qmt_json_get(u, "prompt_tokens_details"), "cached_tokens")),
                         count_of(qmt_json_get(u, "prompt_cache_hit_tokens")));
    double reasoning = count_of(qmt_json_get(qmt_json_get(u, "completion_tokens_details"), "reasoning_tokens"));
    qmt_buf_printf(b,
                   "{\"input_tokens\":%.0f,\"output_tokens\":%.0f,\"reasoning_tokens\":%.0f,"
                   "\"cache_read\":%.0f,\"cache_write\":0}",
                   fmax(input - cached, 0), fmax(output - reasoning, 0), reasoning, cached);
}

/* OpenAI finish_reason -> QueryMT FinishReason (PascalCase). */
static const char *finish_reason_of(const qmt_json *v) {
    if (str_eq(v, "stop"))
        return "Stop";
    if (str_eq(v, "length"))
        return "Length";
    if (str_eq(v, "tool_calls") || str_eq(v, "function_call"))
        return "ToolCalls";
    if (str_eq(v, "content_filter"))
        return "ContentFilter";
    return "Unknown";
}

/* A ToolCall's arguments must be a JSON string; some OpenAI-compatible servers send an object. */
static void write_arguments(qmt_buf *b, const qmt_json *arguments) {
    if (is_string(arguments)) {
        write_upstream_string(b, arguments);
    } else if (!arguments) {
        qmt_buf_puts(b, "\"\"");
    } else {
        qmt_buf text = {0};
        write_compact(&text, arguments);
        qmt_json_write_string(b, (const char *)text.data, text.len);
        qmt_buf_free(&text);
    }
}

static void write_tool_call(qmt_buf *b, const char *id, size_t id_len, const char *name, size_t name_len,
                            const qmt_json *arguments_json, const qmt_buf *arguments_text) {
    qmt_buf_puts(b, "{\"id\":");
    qmt_json_write_string(b, id, id_len);
    qmt_buf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":");
    qmt_json_write_string(b, name, name_len);
    qmt_buf_puts(b, ",\"arguments\":");
    if (arguments_text)
        qmt_json_write_string(b, (const char *)arguments_text->data, arguments_text->len);
    else
        write_arguments(b, arguments_json);
    qmt_buf_puts(b, "}}");
}

/* The first string among a message's reasoning fields (OpenAI-compatible servers differ). */
static const qmt_json *reasoning_of(const qmt_json *message) {
    const qmt_json *v = qmt_json_get(message, "reasoning_content");
    return is_string(v) ? v : qmt_json_get(message, "reasoning");
}

/* ==== name, base_url, api_key_name, config_schema, init_logging ================================= */

QMT_TEXT_OP(op_name, PLUGIN_NAME)
QMT_TEXT_OP(op_base_url, DEFAULT_BASE_URL)
QMT_TEXT_OP(op_api_key_name, API_KEY_NAME)

static int32_t op_config_schema(qmt_slice in, qmt_buf *out) {
    jlist props = {out, 0};
    (void)in;
    qmt_buf_puts(out, "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"title\":\"OpenAI\","
                      "\"description\":\"Config of the openai provider: the OpenAI Chat Completions API or a "
                      "server compatible with it.\",\"type\":\"object\",\"properties\":{");
    for (int f = 0; f < F_COUNT; f++) {
        jkey(&props, FIELDS[f].name);
        qmt_buf_puts(out, "{\"description\":");
        qmt_json_write_cstr(out, FIELDS[f].description);
        qmt_buf_putc(out, ',');
        qmt_buf_puts(out, KIND_SCHEMA[FIELDS[f].kind]);
        qmt_buf_putc(out, '}');
    }
    qmt_buf_puts(out, "},\"additionalProperties\":false}");
    return 0;
}

static int32_t op_init_logging(qmt_slice in, qmt_buf *out) {
    document d;
    int32_t rc = parse_document(&d, in, "the log level", out);
    if (rc == 0) {
        double level = integer_or_minus1(d.root, 5);
        if (level < 0)
            rc = qmt_fail(out, "json_error", "the log level must be an integer from 0 (off) to 5 (trace)");
        else
            qmt_set_log_level((int)level);
    }
    qmt_json_doc_free(&d.doc);
    return rc;
}

/* ==== from_config, supports_streaming =========================================================== */

/* Validates and echoes the config unchanged (generation A: the host keeps the JSON it sent). */
static int32_t op_from_config(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    int32_t rc = parse_document(&d, in, "the provider config", out);
    if (rc == 0 && (rc = config_load(d.root, &c, out)) == 0)
        qmt_buf_put(out, d.root->raw.data, d.root->raw.len);
    qmt_json_doc_free(&d.doc);
    return rc;
}

static int32_t op_supports_streaming(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    int32_t rc = parse_document(&d, in, "the provider config", out);
    if (rc == 0 && (rc = config_load(d.root, &c, out)) == 0)
        qmt_buf_puts(out, "true");
    qmt_json_doc_free(&d.doc);
    return rc;
}

/* ==== list models =============================================================================== */

/* OpenAI's catalogue is only known by asking: null sends the host to list_models_request. */
QMT_TEXT_OP(op_list_models_static, "null")

/* Input {"cfg":{...}} with an untyped cfg (wire spec 6): only base_url and api_key are read. */
static int32_t op_list_models_request(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    int32_t rc = parse_document(&d, in, "the list-models request", out);
    if (rc == 0) {
        const qmt_json *cfg = qmt_json_get(d.root, "cfg");
        const qmt_json *base = qmt_json_get(cfg, "base_url");
        const qmt_json *key = qmt_json_get(cfg, "api_key");
        memset(&c, 0, sizeof c);
        if (base && !is_type(base, QMT_JSON_NULL) && !http_url(base))
            rc = qmt_fail(out, "invalid_request", "invalid base_url for provider openai: expected an http(s) URL");
        else if (is_string(key) && !visible_ascii(key))
            rc = qmt_fail(out, "invalid_request", "`api_key` may only contain printable ASCII characters");
        if (rc == 0) {
            c.v[F_BASE_URL] = is_string(base) ? base : NULL;
            c.v[F_API_KEY] = is_string(key) ? key : NULL;
            endpoint e = endpoint_of(&c);
            write_request(out, "GET", &e, "models", NULL);
        }
    }
    qmt_json_doc_free(&d.doc);
    return rc;
}

static int32_t op_parse_list_models_response(qmt_slice in, qmt_buf *out) {
    parse_job job;
    int32_t rc = parse_job_begin(&job, in, 0, out);
    if (rc == 0) {
        const qmt_json *data = qmt_json_get(job.body.root, "data");
        jlist ids = {out, 0};
        if (!is_type(data, QMT_JSON_ARRAY)) {
            rc = fail_format(out, "the models response has no `data` array", &job.resp.body);
        } else {
            qmt_buf_putc(out, '[');
            qmt_json_foreach(model, data) {
                const qmt_json *id = qmt_json_get(model, "id");
                if (is_string(id)) {
                    jsep(&ids);
                    write_upstream_string(out, id);
                }
            }
            qmt_buf_putc(out, ']');
        }
    }
    parse_job_end(&job);
    return rc;
}

/* ==== chat requests ============================================================================= */

/* Appends nested text blocks (a tool result's content), joined by newlines. */
static void collect_text(qmt_buf *text, const qmt_json *blocks) {
    qmt_json_foreach(block, blocks) {
        const qmt_json *t = qmt_json_get(block, "text");
        if (str_eq(qmt_json_get(block, "type"), "text") && is_string(t)) {
            if (text->len)
                qmt_buf_putc(text, '\n');
            qmt_buf_put(text, t->str, t->len);
        }
    }
}

/* {"type":"image_url","image_url":{"url":...}} from an image_url block or, for image bytes, a data URL. */
static int32_t write_image_part(qmt_buf *b, const qmt_json *block, qmt_buf *out) {
    const qmt_json *url = qmt_json_get(block, "url");
    qmt_buf_puts(b, "{\"type\":\"image_url\",\"image_url\":{\"url\":");
    if (str_eq(qmt_json_get(block, "type"), "image_url")) {
        if (!is_string(url))
            return qmt_fail(out, "json_error", "an image_url block needs a string `url`");
        write_upstream_string(b, url);
    } else {
        const qmt_json *mime = qmt_json_get(block, "mime_type");
        qmt_buf bytes = {0}, data_url = {0};
        if (!is_string(mime) || qmt_json_bytes(qmt_json_get(block, "data"), &bytes) != 0) {
            qmt_buf_free(&bytes);
            return qmt_fail(out, "json_error", "an image block needs `mime_type` and `data` (an array of byte values)");
        }
        qmt_buf_puts(&data_url, "data:");
        qmt_buf_put(&data_url, mime->str, mime->len);
        qmt_buf_puts(&data_url, ";base64,");
        write_base64(&data_url, bytes.data, bytes.len);
        qmt_json_write_string(b, (const char *)data_url.data, data_url.len);
        qmt_buf_free(&bytes);
        qmt_buf_free(&data_url);
    }
    qmt_buf_puts(b, "}}");
    return 0;
}

/* One role:"tool" message per tool_result block (OpenAI wants them right after the assistant's call). */
static int32_t write_tool_results(jlist *msgs, const qmt_json *content, qmt_buf *out) {
    qmt_json_foreach(block, content) {
        const qmt_json *id = qmt_json_get(block, "id");
        qmt_buf text = {0};
        if (!str_eq(qmt_json_get(block, "type"), "tool_result"))
            continue;
        if (!is_string(id))
            return qmt_fail(out, "json_error", "a tool_result block needs a string `id`");
        collect_text(&text, qmt_json_get(block, "content"));
        jsep(msgs);
        qmt_buf_puts(msgs->b, "{\"role\":\"tool\",\"tool_call_id\":");
        write_upstream_string(msgs->b, id);
        qmt_buf_puts(msgs->b, ",\"content\":");
        qmt_json_write_string(msgs->b, (const char *)text.data, text.len);
        qmt_buf_putc(msgs->b, '}');
        qmt_buf_free(&text);
    }
    return 0;
}

/* "tool_calls":[...] for the tool_use blocks; each call's arguments serialised to a JSON string. */
static int32_t write_tool_calls(qmt_buf *b, const qmt_json *content, qmt_buf *out) {
    jlist calls = {b, 0};
    qmt_buf_puts(b, ",\"tool_calls\":[");
    qmt_json_foreach(block, content) {
        const qmt_json *id = qmt_json_get(block, "id");
        const qmt_json *name = qmt_json_get(block, "name");
        const qmt_json *arguments = qmt_json_get(block, "arguments");
        qmt_buf text = {0};
        if (!str_eq(qmt_json_get(block, "type"), "tool_use"))
            continue;
        if (!is_string(id) || !is_string(name))
            return qmt_fail(out, "json_error", "a tool_use block needs string `id` and `name`");
        if (arguments)
            write_compact(&text, arguments);
        else
            qmt_buf_puts(&text, "null");
        jsep(&calls);
        write_tool_call(b, id->str, id->len, name->str, name->len, NULL, &text);
        qmt_buf_free(&text);
    }
    qmt_buf_putc(b, ']');
    return 0;
}

typedef struct {
    size_t texts, images, tool_uses;
} content_census;

static content_census census_of(const qmt_json *content) {
    content_census n = {0, 0, 0};
    qmt_json_foreach(block, content) {
        const qmt_json *type = qmt_json_get(block, "type");
        if (str_eq(type, "text") && is_string(qmt_json_get(block, "text")))
            n.texts++;
        else if (str_eq(type, "image") || str_eq(type, "image_url"))
            n.images++;
        else if (str_eq(type, "tool_use"))
            n.tool_uses++;
        else if (!str_eq(type, "tool_result") && !str_eq(type, "thinking"))
            qmt_log(2, LOG_TARGET, "dropping a content block the OpenAI chat API cannot take");
    }
    return n;
}

/* The content of a message: one text block as a plain string, otherwise an array of text and
   image_url parts (thinking, pdf, audio and resource links have no Chat Completions equivalent). */
static int32_t write_content(qmt_buf *b, const qmt_json *content, content_census n, qmt_buf *out) {
    jlist parts = {b, 0};
    if (n.images == 0 && n.texts == 1) {
        qmt_json_foreach(block, content) if (str_eq(qmt_json_get(block, "type"), "text")) {
            write_upstream_string(b, qmt_json_get(block, "text"));
            break;
        }
        return 0;
    }
    qmt_buf_putc(b, '[');
    qmt_json_foreach(block, content) {
        const qmt_json *type = qmt_json_get(block, "type");
        if (str_eq(type, "text") && is_string(qmt_json_get(block, "text"))) {
            jsep(&parts);
            qmt_buf_puts(b, "{\"type\":\"text\",\"text\":");
            write_upstream_string(b, qmt_json_get(block, "text"));
            qmt_buf_putc(b, '}');
        } else if (str_eq(type, "image") || str_eq(type, "image_url")) {
            int32_t rc;
            jsep(&parts);
            if ((rc = write_image_part(b, block, out)))
                return rc;
        }
    }
    qmt_buf_putc(b, ']');
    return 0;
}

/* An assistant turn with tool calls: its text (joined) as content, omitted when there is none. */
static int32_t write_tool_use_message(jlist *msgs, const char *role, const qmt_json *content, qmt_buf *out) {
    qmt_buf text = {0};
    jsep(msgs);
    qmt_buf_printf(msgs->b, "{\"role\":\"%s\"", role);
    collect_text(&text, content);
    if (text.len) {
        qmt_buf_puts(msgs->b, ",\"content\":");
        qmt_json_write_string(msgs->b, (const char *)text.data, text.len);
    }
    qmt_buf_free(&text);
    int32_t rc = write_tool_calls(msgs->b, content, out);
    qmt_buf_putc(msgs->b, '}');
    return rc;
}

/* One QueryMT ChatMessage becomes zero or more OpenAI messages. */
static int32_t write_message(jlist *msgs, const qmt_json *message, qmt_buf *out) {
    const qmt_json *role_v = qmt_json_get(message, "role");
    const qmt_json *content = qmt_json_get(message, "content");
    const char *role = str_eq(role_v, "User") ? "user" : str_eq(role_v, "Assistant") ? "assistant" : NULL;
    int32_t rc;
    if (!role)
        return qmt_fail(out, "json_error", "a message role must be \"User\" or \"Assistant\"");
    if (!is_type(content, QMT_JSON_ARRAY))
        return qmt_fail(out, "json_error", "a message `content` must be an array of content blocks");
    if ((rc = write_tool_results(msgs, content, out)))
        return rc;
    content_census n = census_of(content);
    if (n.tool_uses)
        return write_tool_use_message(msgs, role, content, out);
    if (n.texts + n.images == 0)
        return 0; /* nothing OpenAI could take (e.g. only tool results, already sent, or thinking) */
    jsep(msgs);
    qmt_buf_printf(msgs->b, "{\"role\":\"%s\",\"content\":", role);
    if ((rc = write_content(msgs->b, content, n, out)))
        return rc;
    qmt_buf_putc(msgs->b, '}');
    return 0;
}

static int32_t write_messages(qmt_buf *b, const config *c, const qmt_json *messages, qmt_buf *out) {
    jlist msgs = {b, 0};
    qmt_buf_putc(b, '[');
    qmt_json_foreach(prompt, c->v[F_SYSTEM]) {
        jsep(&msgs);
        qmt_buf_puts(b, "{\"role\":\"system\",\"content\":");
        write_upstream_string(b, prompt);
        qmt_buf_putc(b, '}');
    }
    qmt_json_foreach(message, messages) {
        int32_t rc = write_message(&msgs, message, out);
        if (rc)
            return rc;
    }
    qmt_buf_putc(b, ']');
    return 0;
}

/* The Chat Completions body, keys in the order QueryMT's openai plugin sends them. */
static int32_t write_chat_body(qmt_buf *b, const config *c, const qmt_json *messages, const qmt_json *tools,
                               int stream, qmt_buf *out) {
    jlist body = {b, 0};
    int has_tools = is_type(tools, QMT_JSON_ARRAY) && tools->len > 0; /* OpenAI rejects "tools":[] */
    int32_t rc;
    qmt_buf_putc(b, '{');
    jkey(&body, "model");
    write_upstream_string(b, c->v[F_MODEL]);
    jkey(&body, "messages");
    if ((rc = write_messages(b, c, messages, out)))
        return rc;
    if (c->v[F_MAX_TOKENS]) {
        jkey(&body, "max_tokens");
        write_uint(b, c->v[F_MAX_TOKENS]->num);
    }
    if (c->v[F_TEMPERATURE]) {
        jkey(&body, "temperature");
        write_f32(b, c->v[F_TEMPERATURE]->num);
    }
    jkey(&body, "stream");
    qmt_buf_puts(b, stream ? "true" : "false");
    if (stream) {
        jkey(&body, "stream_options");
        qmt_buf_puts(b, "{\"include_usage\":true}");
    }
    if (c->v[F_TOP_P]) {
        jkey(&body, "top_p");
        write_f32(b, c->v[F_TOP_P]->num);
    }
    if (has_tools) {
        jkey(&body, "tools");
        qmt_json_write_raw(b, tools); /* byte for byte: key order and number spelling survive */
        if (c->v[F_TOOL_CHOICE]) {
            jkey(&body, "tool_choice");
            write_compact(b, c->v[F_TOOL_CHOICE]);
        }
    }
    if (c->v[F_REASONING_EFFORT]) {
        jkey(&body, "reasoning_effort");
        qmt_json_write_cstr(b, str_eq(c->v[F_REASONING_EFFORT], "max") ? "xhigh" : c->v[F_REASONING_EFFORT]->str);
    }
    qmt_buf_putc(b, '}');
    return 0;
}

/* ExtismChatRequest {"cfg","messages","tools"} -> the POST /chat/completions request. */
static int32_t chat_request(qmt_slice in, qmt_buf *out, int stream) {
    document d;
    config c;
    qmt_buf body = {0};
    int32_t rc = parse_document(&d, in, "the chat request", out);
    if (rc == 0)
        rc = config_from(d.root, &c, out);
    if (rc == 0)
        rc = require_model(&c, out);
    if (rc == 0) {
        const qmt_json *messages = qmt_json_get(d.root, "messages");
        const qmt_json *tools = qmt_json_get(d.root, "tools");
        if (!is_type(messages, QMT_JSON_ARRAY))
            rc = qmt_fail(out, "json_error", "missing field `messages` (an array of ChatMessage)");
        else if (tools && !is_type(tools, QMT_JSON_NULL) && !is_type(tools, QMT_JSON_ARRAY))
            rc = qmt_fail(out, "json_error", "`tools` must be an array of tools or null");
        else
            rc = write_chat_body(&body, &c, messages, tools, stream, out);
    }
    if (rc == 0) {
        endpoint e = endpoint_of(&c);
        write_request(out, "POST", &e, "chat/completions", &body);
    }
    qmt_buf_free(&body);
    qmt_json_doc_free(&d.doc);
    return rc;
}

static int32_t op_chat_request(qmt_slice in, qmt_buf *out) {
    return chat_request(in, out, 0);
}

static int32_t op_chat_stream_request(qmt_slice in, qmt_buf *out) {
    return chat_request(in, out, 1);
}

/* ==== chat responses ============================================================================ */

static void write_response_tool_calls(qmt_buf *b, const qmt_json *calls) {
    jlist l = {b, 0};
    qmt_buf_putc(b, '[');
    qmt_json_foreach(call, calls) {
        const qmt_json *id = qmt_json_get(call, "id");
        const qmt_json *function = qmt_json_get(call, "function");
        const qmt_json *name = qmt_json_get(function, "name");
        jsep(&l);
        write_tool_call(b, is_string(id) ? id->str : "", is_string(id) ? id->len : 0, is_string(name) ? name->str : "",
                        is_string(name) ? name->len : 0, qmt_json_get(function, "arguments"), NULL);
    }
    qmt_buf_putc(b, ']');
}

static void write_optional_text(qmt_buf *b, const qmt_json *v) {
    if (is_string(v))
        write_upstream_string(b, v);
    else
        qmt_buf_puts(b, "null");
}

/* ExtismChatResponse from a chat.completion object: all five keys, always. */
static void write_chat_response(qmt_buf *out, const qmt_json *completion) {
    const qmt_json *choice = qmt_json_at(qmt_json_get(completion, "choices"), 0);
    const qmt_json *message = qmt_json_get(choice, "message");
    const qmt_json *calls = qmt_json_get(message, "tool_calls");
    const qmt_json *usage = qmt_json_get(completion, "usage");
    const qmt_json *finish = qmt_json_get(choice, "finish_reason");
    qmt_buf_puts(out, "{\"text\":");
    write_optional_text(out, qmt_json_get(message, "content"));
    qmt_buf_puts(out, ",\"tool_calls\":");
    if (is_type(calls, QMT_JSON_ARRAY))
        write_response_tool_calls(out, calls);
    else
        qmt_buf_puts(out, "null");
    qmt_buf_puts(out, ",\"thinking\":");
    write_optional_text(out, reasoning_of(message));
    qmt_buf_puts(out, ",\"usage\":");
    if (is_type(usage, QMT_JSON_OBJECT))
        write_usage(out, usage);
    else
        qmt_buf_puts(out, "null");
    qmt_buf_puts(out, ",\"finish_reason\":");
    if (is_string(finish))
        qmt_buf_printf(out, "\"%s\"", finish_reason_of(finish));
    else
        qmt_buf_puts(out, "null");
    qmt_buf_putc(out, '}');
}

static int32_t op_parse_chat_response(qmt_slice in, qmt_buf *out) {
    parse_job job;
    int32_t rc = parse_job_begin(&job, in, 1, out);
    if (rc == 0) {
        if (!is_type(qmt_json_get(job.body.root, "choices"), QMT_JSON_ARRAY))
            rc = fail_format(out, "Failed to decode API response: missing field `choices`", &job.resp.body);
        else
            write_chat_response(out, job.body.root);
    }
    parse_job_end(&job);
    return rc;
}

/* {"cfg","resp"} of a failed chat call -> PluginError, returned as normal output (code 0). */
static int32_t op_classify_chat_error(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    http_response r;
    int32_t rc = parse_document(&d, in, "the classify request", out);
    memset(&r, 0, sizeof r);
    if (rc == 0)
        rc = config_from(d.root, &c, out);
    if (rc == 0)
        rc = response_read(qmt_json_get(d.root, "resp"), &r, out);
    if (rc == 0)
        classify_response(out, &r);
    qmt_buf_free(&r.body);
    qmt_json_doc_free(&d.doc);
    return rc;
}

/* ==== chat stream parser ======================================================================== */

/* One tool call being assembled from its deltas, keyed by OpenAI's `index`. */
typedef struct {
    double index;
    qmt_buf id, name, arguments;
    int started, completed;
} tool_state;

typedef struct {
    int64_t id;
    qmt_buf pending; /* an unterminated line, kept until its LF arrives */
    tool_state *tools;
    size_t n_tools;
    const char *finish_reason; /* QueryMT FinishReason once upstream has sent one */
    int done;                  /* the single done chunk has been emitted */
} stream_parser;

/* Parser state lives in this plugin instance, as with the macro (wire spec 4): ids start at 1. */
static stream_parser **parsers;
static size_t n_parsers;
static int64_t next_parser_id = 1;

static stream_parser *parser_find(int64_t id, size_t *slot) {
    for (size_t i = 0; i < n_parsers; i++)
        if (parsers[i]->id == id) {
            if (slot)
                *slot = i;
            return parsers[i];
        }
    return NULL;
}

static void parser_free(stream_parser *p) {
    for (size_t i = 0; i < p->n_tools; i++) {
        qmt_buf_free(&p->tools[i].id);
        qmt_buf_free(&p->tools[i].name);
        qmt_buf_free(&p->tools[i].arguments);
    }
    free(p->tools);
    qmt_buf_free(&p->pending);
    free(p);
}

static void parser_remove(int64_t id) {
    size_t slot;
    stream_parser *p = parser_find(id, &slot);
    if (!p)
        return;
    parsers[slot] = parsers[--n_parsers];
    parser_free(p);
}

static tool_state *tool_for(stream_parser *p, double index) {
    tool_state *grown;
    for (size_t i = 0; i < p->n_tools; i++)
        if (p->tools[i].index == index)
            return &p->tools[i];
    grown = realloc(p->tools, (p->n_tools + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    p->tools = grown;
    memset(&p->tools[p->n_tools], 0, sizeof *grown);
    p->tools[p->n_tools].index = index;
    return &p->tools[p->n_tools++];
}

/* ---- ExtismChatChunk writers: {"chunk": StreamChunk, "usage": Usage|null} ---- */

static void chunk_text(jlist *chunks, const char *variant, const qmt_json *text) {
    jsep(chunks);
    qmt_buf_printf(chunks->b, "{\"chunk\":{\"%s\":", variant);
    write_upstream_string(chunks->b, text);
    qmt_buf_puts(chunks->b, "},\"usage\":null}");
}

static void chunk_tool_start(jlist *chunks, const tool_state *t) {
    jsep(chunks);
    qmt_buf_puts(chunks->b, "{\"chunk\":{\"tool_use_start\":{\"index\":");
    write_uint(chunks->b, t->index);
    qmt_buf_puts(chunks->b, ",\"id\":");
    qmt_json_write_string(chunks->b, (const char *)t->id.data, t->id.len);
    qmt_buf_puts(chunks->b, ",\"name\":");
    qmt_json_write_string(chunks->b, (const char *)t->name.data, t->name.len);
    qmt_buf_puts(chunks->b, "}},\"usage\":null}");
}

static void chunk_tool_delta(jlist *chunks, double index, const qmt_json *partial) {
    jsep(chunks);
    qmt_buf_puts(chunks->b, "{\"chunk\":{\"tool_use_input_delta\":{\"index\":");
    write_uint(chunks->b, index);
    qmt_buf_puts(chunks->b, ",\"partial_json\":");
    write_upstream_string(chunks->b, partial);
    qmt_buf_puts(chunks->b, "}},\"usage\":null}");
}

static void chunk_tool_complete(jlist *chunks, const tool_state *t) {
    jsep(chunks);
    qmt_buf_puts(chunks->b, "{\"chunk\":{\"tool_use_complete\":{\"index\":");
    write_uint(chunks->b, t->index);
    qmt_buf_puts(chunks->b, ",\"tool_call\":");
    write_tool_call(chunks->b, (const char *)t->id.data, t->id.len, (const char *)t->name.data, t->name.len, NULL,
                    &t->arguments);
    qmt_buf_puts(chunks->b, "}},\"usage\":null}");
}

/* The macro copies a usage chunk's Usage into the outer field (golden extism_chat_chunk_usage). */
static void chunk_usage(jlist *chunks, const qmt_json *usage) {
    qmt_buf mapped = {0};
    write_usage(&mapped, usage);
    jsep(chunks);
    qmt_buf_puts(chunks->b, "{\"chunk\":{\"usage\":");
    qmt_buf_put(chunks->b, mapped.data, mapped.len);
    qmt_buf_puts(chunks->b, "},\"usage\":");
    qmt_buf_put(chunks->b, mapped.data, mapped.len);
    qmt_buf_putc(chunks->b, '}');
    qmt_buf_free(&mapped);
}

/* tool_use_complete for every started call not yet completed, in index order. */
static void complete_tools(stream_parser *p, jlist *chunks) {
    for (;;) {
        tool_state *next = NULL;
        for (size_t i = 0; i < p->n_tools; i++) {
            tool_state *t = &p->tools[i];
            if (t->started && !t->completed && (!next || t->index < next->index))
                next = t;
        }
        if (!next)
            return;
        next->completed = 1;
        chunk_tool_complete(chunks, next);
    }
}

/* The one done chunk of a stream. OpenAI sends finish_reason, then (with include_usage) the usage
   chunk, then [DONE]; done waits for [DONE] (or finish) so that consumers which stop at done still
   see the usage. */
static void emit_done(stream_parser *p, jlist *chunks) {
    if (p->done)
        return;
    complete_tools(p, chunks);
    p->done = 1;
    jsep(chunks);
    qmt_buf_printf(chunks->b, "{\"chunk\":{\"done\":{\"finish_reason\":\"%s\"}},\"usage\":null}",
                   p->finish_reason ? p->finish_reason : "Stop");
}

static int32_t stream_tool_deltas(stream_parser *p, const qmt_json *calls, jlist *chunks, qmt_buf *out) {
    qmt_json_foreach(call, calls) {
        const qmt_json *index_v = qmt_json_get(call, "index");
        const qmt_json *id = qmt_json_get(call, "id");
        const qmt_json *function = qmt_json_get(call, "function");
        const qmt_json *name = qmt_json_get(function, "name");
        const qmt_json *arguments = qmt_json_get(function, "arguments");
        double index = index_v ? integer_or_minus1(index_v, 1e6) : 0;
        tool_state *t;
        if (index < 0)
            return qmt_fail(out, "response_format_error", "a streamed tool call has an invalid `index`");
        if (!(t = tool_for(p, index)))
            return qmt_fail(out, "plugin_error", "out of memory");
        if (is_string(id) && id->len) {
            qmt_buf_reset(&t->id);
            qmt_buf_put(&t->id, id->str, id->len);
        }
        if (is_string(name) && name->len) {
            qmt_buf_reset(&t->name);
            qmt_buf_put(&t->name, name->str, name->len);
            if (!t->started) {
                t->started = 1;
                chunk_tool_start(chunks, t);
            }
        }
        if (is_string(arguments) && arguments->len) {
            qmt_buf_put(&t->arguments, arguments->str, arguments->len);
            chunk_tool_delta(chunks, index, arguments);
        }
    }
    return 0;
}

static int32_t stream_choice(stream_parser *p, const qmt_json *choice, jlist *chunks, qmt_buf *out) {
    const qmt_json *delta = qmt_json_get(choice, "delta");
    const qmt_json *thinking = reasoning_of(delta);
    const qmt_json *text = qmt_json_get(delta, "content");
    const qmt_json *finish = qmt_json_get(choice, "finish_reason");
    int32_t rc;
    if (is_string(thinking) && thinking->len)
        chunk_text(chunks, "thinking", thinking);
    if (is_string(text) && text->len)
        chunk_text(chunks, "text", text);
    if ((rc = stream_tool_deltas(p, qmt_json_get(delta, "tool_calls"), chunks, out)))
        return rc;
    if (is_string(finish)) {
        complete_tools(p, chunks);
        p->finish_reason = finish_reason_of(finish);
    }
    return 0;
}

/* A `data: {"error":{...}}` event: the stream failed upstream. */
static int32_t stream_error(const qmt_json *envelope, qmt_buf *out) {
    const qmt_json *error = qmt_json_get(envelope, "error");
    const qmt_json *message = is_string(error) ? error : qmt_json_get(error, "message");
    jlist l = {out, 0};
    qmt_buf_reset(out);
    qmt_buf_puts(out, "{\"payload\":{");
    jkey(&l, "type");
    qmt_buf_puts(out, "\"provider_error\"");
    jkey(&l, "message");
    if (is_string(message) && message->len)
        write_upstream_string(out, message);
    else
        qmt_buf_puts(out, "\"openai stream failed\"");
    write_provider_details(&l, error, qmt_json_get(envelope, "request_id"));
    qmt_buf_puts(out, "}}");
    return 1;
}

static int32_t stream_event(stream_parser *p, const char *data, size_t len, jlist *chunks, qmt_buf *out) {
    document d;
    char err[160] = "";
    int32_t rc = 0;
    memset(&d, 0, sizeof d);
    d.root = qmt_json_parse((qmt_slice){(const uint8_t *)data, len}, &d.doc, err, sizeof err);
    if (!d.root) {
        qmt_buf raw = {0}, message = {0};
        qmt_buf_put(&raw, data, len);
        qmt_buf_printf(&message, "Failed to parse OpenAI stream chunk: %s", err);
        rc = fail_format(out, (const char *)message.data, &raw);
        qmt_buf_free(&raw);
        qmt_buf_free(&message);
    } else if (qmt_json_get(d.root, "error") && !is_type(qmt_json_get(d.root, "error"), QMT_JSON_NULL)) {
        rc = stream_error(d.root, out);
    } else {
        const qmt_json *usage = qmt_json_get(d.root, "usage");
        if (is_type(usage, QMT_JSON_OBJECT))
            chunk_usage(chunks, usage);
        qmt_json_foreach(choice, qmt_json_get(d.root, "choices")) {
            if ((rc = stream_choice(p, choice, chunks, out)))
                break;
        }
    }
    qmt_json_doc_free(&d.doc);
    return rc;
}

/* One SSE line (without its LF). Only `data:` fields matter; comments, blank lines and other fields
   (event:, id:, retry:) carry nothing for Chat Completions. */
static int32_t stream_line(stream_parser *p, const char *line, size_t len, jlist *chunks, qmt_buf *out) {
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    if (p->done || len < 5 || strncmp(line, "data:", 5) != 0)
        return 0;
    line += 5, len -= 5;
    if (len && line[0] == ' ')
        line++, len--;
    if (len == 6 && memcmp(line, "[DONE]", 6) == 0) {
        emit_done(p, chunks);
        return 0;
    }
    return stream_event(p, line, len, chunks, out);
}

/* Feeds bytes; complete lines are parsed, a trailing partial line waits in p->pending. */
static int32_t stream_feed(stream_parser *p, const uint8_t *bytes, size_t n, jlist *chunks, qmt_buf *out) {
    qmt_buf_put(&p->pending, bytes, n);
    size_t start = 0;
    int32_t rc = 0;
    for (size_t i = 0; i < p->pending.len && rc == 0; i++) {
        if (p->pending.data[i] != '\n')
            continue;
        rc = stream_line(p, (const char *)p->pending.data + start, i - start, chunks, out);
        start = i + 1;
    }
    if (start) {
        memmove(p->pending.data, p->pending.data + start, p->pending.len - start);
        p->pending.len -= start;
        p->pending.data[p->pending.len] = 0; /* qmt_buf keeps its data NUL-terminated */
    }
    return rc;
}

static int32_t parser_id_input(qmt_slice in, int64_t *id, qmt_buf *out) {
    document d;
    int32_t rc = parse_document(&d, in, "the parser id", out);
    if (rc == 0) {
        double v = integer_or_minus1(d.root, 9007199254740991.0);
        if (v < 0)
            rc = qmt_fail(out, "json_error", "a stream parser id must be a non-negative integer");
        *id = (int64_t)v;
    }
    qmt_json_doc_free(&d.doc);
    return rc;
}

static int32_t op_chat_stream_parser_start(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    int32_t rc = parse_document(&d, in, "the provider config", out);
    if (rc == 0)
        rc = config_load(d.root, &c, out);
    qmt_json_doc_free(&d.doc);
    if (rc)
        return rc;
    stream_parser *p = calloc(1, sizeof *p);
    stream_parser **grown = realloc(parsers, (n_parsers + 1) * sizeof *grown);
    if (!p || !grown) {
        free(p);
        if (grown)
            parsers = grown;
        return qmt_fail(out, "plugin_error", "out of memory");
    }
    parsers = grown;
    p->id = next_parser_id++;
    parsers[n_parsers++] = p;
    qmt_buf_printf(out, "%lld", (long long)p->id);
    return 0;
}

static int32_t op_chat_stream_parser_parse(qmt_slice in, qmt_buf *out) {
    document d;
    qmt_buf line = {0};
    int32_t rc = parse_document(&d, in, "the stream chunk", out);
    if (rc == 0) {
        double id = integer_or_minus1(qmt_json_get(d.root, "parser_id"), 9007199254740991.0);
        stream_parser *p = id < 0 ? NULL : parser_find((int64_t)id, NULL);
        jlist chunks = {out, 0};
        if (!p)
            rc = qmt_fail(out, "invalid_request", "unknown stream parser id (call chat_stream_parser_start first)");
        else if (qmt_json_bytes(qmt_json_get(d.root, "chunk"), &line) != 0)
            rc = qmt_fail(out, "json_error", "`chunk` must be an array of byte values");
        if (rc == 0) {
            qmt_buf_putc(out, '[');
            rc = stream_feed(p, line.data, line.len, &chunks, out);
            if (rc == 0)
                qmt_buf_putc(out, ']');
        }
    }
    qmt_buf_free(&line);
    qmt_json_doc_free(&d.doc);
    return rc;
}

/* Parses a dangling partial line, completes open tool calls, emits done if upstream never sent
   [DONE], and removes the parser. */
static int32_t op_chat_stream_parser_finish(qmt_slice in, qmt_buf *out) {
    int64_t id = 0;
    int32_t rc = parser_id_input(in, &id, out);
    stream_parser *p = rc == 0 ? parser_find(id, NULL) : NULL;
    jlist chunks = {out, 0};
    if (rc)
        return rc;
    if (!p)
        return qmt_fail(out, "invalid_request", "unknown stream parser id %lld", (long long)id);
    qmt_buf_putc(out, '[');
    rc = stream_feed(p, (const uint8_t *)"\n", p->pending.len ? 1 : 0, &chunks, out);
    if (rc == 0) {
        emit_done(p, &chunks);
        qmt_buf_putc(out, ']');
    }
    parser_remove(id);
    return rc;
}

static int32_t op_chat_stream_parser_close(qmt_slice in, qmt_buf *out) {
    int64_t id = 0;
    int32_t rc = parser_id_input(in, &id, out);
    if (rc == 0)
        parser_remove(id); /* idempotent: an unknown id is ignored */
    return rc;
}

/* ==== embeddings ================================================================================ */

/* ExtismEmbedRequest {"cfg","inputs":[...]} -> POST /embeddings. */
static int32_t op_embed_request(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    qmt_buf body = {0};
    jlist l = {&body, 0};
    int32_t rc = parse_document(&d, in, "the embed request", out);
    if (rc == 0)
        rc = config_from(d.root, &c, out);
    if (rc == 0)
        rc = require_model(&c, out);
    if (rc == 0) {
        const qmt_json *inputs = qmt_json_get(d.root, "inputs");
        if (kind_problem(K_STRINGS, inputs))
            rc = qmt_fail(out, "json_error", "`inputs` must be an array of strings");
    }
    if (rc == 0) {
        qmt_buf_putc(&body, '{');
        jkey(&l, "model");
        write_upstream_string(&body, c.v[F_MODEL]);
        jkey(&l, "input");
        write_compact(&body, qmt_json_get(d.root, "inputs"));
        jkey(&l, "encoding_format");
        qmt_json_write_cstr(&body, c.v[F_EMBEDDING_ENCODING_FORMAT] ? c.v[F_EMBEDDING_ENCODING_FORMAT]->str : "float");
        if (c.v[F_EMBEDDING_DIMENSIONS]) {
            jkey(&l, "dimensions");
            write_uint(&body, c.v[F_EMBEDDING_DIMENSIONS]->num);
        }
        qmt_buf_putc(&body, '}');
        endpoint e = endpoint_of(&c);
        write_request(out, "POST", &e, "embeddings", &body);
    }
    qmt_buf_free(&body);
    qmt_json_doc_free(&d.doc);
    return rc;
}

/* One embedding as [f32,...]: a JSON array of numbers, or base64 of little-endian float32s. */
static int write_embedding(qmt_buf *b, const qmt_json *embedding) {
    jlist l = {b, 0};
    qmt_buf_putc(b, '[');
    if (is_type(embedding, QMT_JSON_ARRAY)) {
        qmt_json_foreach(x, embedding) {
            if (!is_type(x, QMT_JSON_NUMBER))
                return -1;
            jsep(&l);
            write_f32(b, x->num);
        }
    } else if (is_string(embedding)) {
        qmt_buf raw = {0};
        int ok = decode_base64(embedding->str, embedding->len, &raw) == 0 && raw.len % 4 == 0;
        for (size_t i = 0; ok && i < raw.len; i += 4) {
            uint32_t bits = (uint32_t)raw.data[i] | (uint32_t)raw.data[i + 1] << 8 | (uint32_t)raw.data[i + 2] << 16 |
                            (uint32_t)raw.data[i + 3] << 24;
            float f;
            memcpy(&f, &bits, sizeof f);
            jsep(&l);
            write_f32(b, f);
        }
        qmt_buf_free(&raw);
        if (!ok)
            return -1;
    } else {
        return -1;
    }
    qmt_buf_putc(b, ']');
    return 0;
}

static int32_t op_parse_embed_response(qmt_slice in, qmt_buf *out) {
    parse_job job;
    int32_t rc = parse_job_begin(&job, in, 1, out);
    if (rc == 0) {
        const qmt_json *data = qmt_json_get(job.body.root, "data");
        jlist l = {out, 0};
        if (!is_type(data, QMT_JSON_ARRAY)) {
            rc = fail_format(out, "Failed to decode API response: missing field `data`", &job.resp.body);
        } else {
            qmt_buf_putc(out, '[');
            qmt_json_foreach(item, data) {
                jsep(&l);
                if (write_embedding(out, qmt_json_get(item, "embedding")) != 0) {
                    rc = fail_format(out, "Failed to decode API response: an embedding is neither an array of "
                                          "numbers nor base64 float32 data", &job.resp.body);
                    break;
                }
            }
            if (rc == 0)
                qmt_buf_putc(out, ']');
        }
    }
    parse_job_end(&job);
    return rc;
}

/* ==== completions =============================================================================== */

/* ExtismCompleteRequest {"cfg","req":{"prompt","suffix","max_tokens","temperature"}} -> POST
   /completions. The request's max_tokens and temperature win over the cfg's. */
static int32_t op_complete_request(qmt_slice in, qmt_buf *out) {
    document d;
    config c;
    qmt_buf body = {0};
    jlist l = {&body, 0};
    int32_t rc = parse_document(&d, in, "the completion request", out);
    if (rc == 0)
        rc = config_from(d.root, &c, out);
    if (rc == 0)
        rc = require_model(&c, out);
    const qmt_json *req = rc == 0 ? qmt_json_get(d.root, "req") : NULL;
    const qmt_json *prompt = qmt_json_get(req, "prompt");
    const qmt_json *suffix = qmt_json_get(req, "suffix");
    const qmt_json *max_tokens = qmt_json_get(req, "max_tokens");
    const qmt_json *temperature = qmt_json_get(req, "temperature");
    if (rc == 0) {
        if (qmt_json_is_null(max_tokens))
            max_tokens = c.v[F_MAX_TOKENS];
        if (qmt_json_is_null(temperature))
            temperature = c.v[F_TEMPERATURE];
        if (!is_string(prompt))
            rc = qmt_fail(out, "json_error", "missing field `req.prompt` (a string)");
        else if (!qmt_json_is_null(suffix) && !is_string(suffix))
            rc = qmt_fail(out, "json_error", "`req.suffix` must be a string or null");
        else if (max_tokens && kind_problem(K_UINT, max_tokens))
            rc = qmt_fail(out, "json_error", "`req.max_tokens` must be a non-negative integer or null");
        else if (temperature && kind_problem(K_FLOAT, temperature))
            rc = qmt_fail(out, "json_error", "`req.temperature` must be a number or null");
    }
    if (rc == 0) {
        qmt_buf_putc(&body, '{');
        jkey(&l, "model");
        write_upstream_string(&body, c.v[F_MODEL]);
        jkey(&l, "prompt");
        write_upstream_string(&body, prompt);
        if (is_string(suffix)) {
            jkey(&l, "suffix");
            write_upstream_string(&body, suffix);
        }
        if (max_tokens) {
            jkey(&l, "max_tokens");
            write_uint(&body, max_tokens->num);
        }
        if (temperature) {
            jkey(&l, "temperature");
            write_f32(&body, temperature->num);
        }
        qmt_buf_putc(&body, '}');
        endpoint e = endpoint_of(&c);
        write_request(out, "POST", &e, "completions", &body);
    }
    qmt_buf_free(&body);
    qmt_json_doc_free(&d.doc);
    return rc;
}

static int32_t op_parse_complete_response(qmt_slice in, qmt_buf *out) {
    parse_job job;
    int32_t rc = parse_job_begin(&job, in, 1, out);
    if (rc == 0) {
        const qmt_json *text = qmt_json_get(qmt_json_at(qmt_json_get(job.body.root, "choices"), 0), "text");
        if (!is_string(text)) {
            rc = fail_format(out, "Failed to decode API response: missing `choices[0].text`", &job.resp.body);
        } else {
            qmt_buf_puts(out, "{\"text\":");
            write_upstream_string(out, text);
            qmt_buf_putc(out, '}');
        }
    }
    parse_job_end(&job);
    return rc;
}

/* ==== the export table ========================================================================== */

#define OPENAI_OPS(X)                                                                                                  \
    X(name, op_name)                                                                                                   \
    X(base_url, op_base_url)                                                                                           \
    X(api_key_name, op_api_key_name)                                                                                   \
    X(config_schema, op_config_schema)                                                                                 \
    X(init_logging, op_init_logging)                                                                                   \
    X(from_config, op_from_config)                                                                                     \
    X(supports_streaming, op_supports_streaming)                                                                       \
    X(list_models_static, op_list_models_static)                                                                       \
    X(list_models_request, op_list_models_request)                                                                     \
    X(parse_list_models_response, op_parse_list_models_response)                                                       \
    X(chat_request, op_chat_request)                                                                                   \
    X(chat_stream_request, op_chat_stream_request)                                                                     \
    X(parse_chat_response, op_parse_chat_response)                                                                     \
    X(classify_chat_error, op_classify_chat_error)                                                                     \
    X(chat_stream_parser_start, op_chat_stream_parser_start)                                                           \
    X(chat_stream_parser_parse, op_chat_stream_parser_parse)                                                           \
    X(chat_stream_parser_finish, op_chat_stream_parser_finish)                                                         \
    X(chat_stream_parser_close, op_chat_stream_parser_close)                                                           \
    X(embed_request, op_embed_request)                                                                                 \
    X(parse_embed_response, op_parse_embed_response)                                                                   \
    X(complete_request, op_complete_request)                                                                           \
    X(parse_complete_response, op_parse_complete_response)

QMT_PLUGIN(OPENAI_OPS)

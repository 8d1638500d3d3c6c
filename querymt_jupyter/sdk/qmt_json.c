/*
 * qmt_json.c - the JSON reader and writer declared in qmt_json.h.
 *
 * The reader is a recursive-descent parser over a byte span that is never assumed to be NUL-terminated.
 * Every node, key and decoded string lives in one arena, so a document is freed with one call and a
 * failed parse leaves nothing behind. It accepts exactly RFC 8259 JSON, with serde_json's extra rules
 * (valid UTF-8, paired surrogates, nesting limit, finite numbers), because QueryMT's own plugins reject
 * what serde_json rejects.
 */
#include "qmt_json.h"

#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128

/* ---- arena -------------------------------------------------------------------------------------- */

typedef struct chunk chunk;
struct chunk {
    chunk *prev;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

typedef struct {
    chunk *head;
    size_t next_cap;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    const size_t align = alignof(max_align_t);
    if (n > SIZE_MAX / 2) return NULL;
    n = (n + align - 1) & ~(align - 1);
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > a->next_cap ? n : a->next_cap;
        chunk *c = malloc(sizeof(chunk) + cap);
        if (!c) return NULL;
        c->prev = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
        if (a->next_cap < SIZE_MAX / 4) a->next_cap *= 2; /* geometric growth: few mallocs per document */
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(arena *a) {
    for (chunk *c = a->head; c;) {
        chunk *prev = c->prev;
        free(c);
        c = prev;
    }
    free(a);
}

/* ---- UTF-8 -------------------------------------------------------------------------------------- */

/* Length (1-4) of the well-formed UTF-8 sequence at s (n bytes available), or 0 if it is not one:
   overlong forms, surrogates (U+D800..DFFF) and code points above U+10FFFF are rejected. */
static size_t utf8_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

static size_t utf8_encode(uint32_t cp, uint8_t *o) {
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- parser ------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *start, *p, *end;
    arena *a;
    char *err;
    size_t err_len;
    int failed;
} parser;

/* Records the first error only: later ones are consequences of it. Returns NULL for tail calls. */
static void *fail(parser *ps, const uint8_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void *fail(parser *ps, const uint8_t *at, const char *fmt, ...) {
    if (ps->failed) return NULL;
    ps->failed = 1;
    if (ps->err && ps->err_len) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(ps->err, ps->err_len, fmt, ap);
        va_end(ap);
        size_t used = n < 0 ? 0 : (size_t)n;
        if (used < ps->err_len)
            snprintf(ps->err + used, ps->err_len - used, " at byte %zu", (size_t)(at - ps->start));
    }
    return NULL;
}

static void *fail_eof(parser *ps) { return fail(ps, ps->end, "unexpected end of input"); }

static void *oom(parser *ps) { return fail(ps, ps->p, "out of memory"); }

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static qmt_json *new_node(parser *ps, qmt_json_type type, const uint8_t *at) {
    qmt_json *v = arena_alloc(ps->a, sizeof *v);
    if (!v) return oom(ps);
    memset(v, 0, sizeof *v);
    v->type = type;
    v->raw.data = at;
    return v;
}

static int hex4(const uint8_t *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Decodes the \u escape at s (pointing at the backslash, `close` bounds the string) into UTF-8 at o.
   Sets *used to the escape's length (6, or 12 for a surrogate pair); returns the bytes written (1-4),
   or 0 after recording an error. */
static size_t decode_u_escape(parser *ps, const uint8_t *s, const uint8_t *close, uint8_t *o, size_t *used) {
    uint32_t cp, lo;
    if (close - s < 6 || hex4(s + 2, &cp)) {
        fail(ps, s, "invalid \\u escape");
        return 0;
    }
    *used = 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        fail(ps, s, "lone trailing surrogate in \\u escape");
        return 0;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (close - s < 12 || s[6] != '\\' || s[7] != 'u' || hex4(s + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
            fail(ps, s, "lone leading surrogate in \\u escape");
            return 0;
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        *used = 12;
    }
    return utf8_encode(cp, o);
}

/* Decodes the string body [s, close) into the arena. Escapes only shrink text, so close - s + 1 bytes
   always suffice. */
static const char *decode_string(parser *ps, const uint8_t *s, const uint8_t *close, size_t *len) {
    uint8_t *out = arena_alloc(ps->a, (size_t)(close - s) + 1);
    if (!out) return oom(ps);
    uint8_t *o = out;
    while (s < close) {
        if (*s == '\\') {
            size_t used = 2;
            switch (s[1]) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '/': *o++ = '/'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                size_t n = decode_u_escape(ps, s, close, o, &used);
                if (!n) return NULL;
                o += n;
                break;
            }
            default: return fail(ps, s, "invalid escape");
            }
            s += used;
        } else {
            size_t n = utf8_len(s, (size_t)(close - s));
            if (!n) return fail(ps, s, "invalid UTF-8 in string");
            memcpy(o, s, n);
            o += n;
            s += n;
        }
    }
    *o = 0;
    *len = (size_t)(o - out);
    return (const char *)out;
}

/* At an opening quote: finds the closing quote (rejecting raw control characters, as JSON requires),
   then decodes. */
static const char *parse_string(parser *ps, size_t *len) {
    const uint8_t *s = ++ps->p;
    while (ps->p < ps->end && *ps->p != '"') {
        if (*ps->p < 0x20) return fail(ps, ps->p, "control character in string");
        if (*ps->p == '\\' && ps->end - ps->p < 2) return fail_eof(ps); /* a backslash as the last byte */
        ps->p += *ps->p == '\\' ? 2 : 1;
    }
    if (ps->p >= ps->end) return fail_eof(ps);
    const uint8_t *close = ps->p++;
    return decode_string(ps, s, close, len);
}

static int is_digit(const parser *ps) { return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9'; }

static int skip_digits(parser *ps) {
    if (!is_digit(ps)) return 0;
    while (is_digit(ps)) ps->p++;
    return 1;
}

static qmt_json *parse_number(parser *ps) {
    const uint8_t *s = ps->p;
    if (*ps->p == '-') ps->p++;
    if (ps->p < ps->end && *ps->p == '0') ps->p++;
    else if (!skip_digits(ps)) return ps->p >= ps->end ? fail_eof(ps) : fail(ps, ps->p, "invalid number");
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!skip_digits(ps)) return ps->p >= ps->end ? fail_eof(ps) : fail(ps, ps->p, "invalid number");
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (!skip_digits(ps)) return ps->p >= ps->end ? fail_eof(ps) : fail(ps, ps->p, "invalid number");
    }
    size_t n = (size_t)(ps->p - s);
    /* strtod needs a NUL-terminated copy; the grammar check above keeps it from reading past the number. */
    char small[64], *text = n < sizeof small ? small : arena_alloc(ps->a, n + 1);
    if (!text) return oom(ps);
    memcpy(text, s, n);
    text[n] = 0;
    double x = strtod(text, NULL);
    if (isinf(x)) return fail(ps, s, "number out of range");
    qmt_json *v = new_node(ps, QMT_JSON_NUMBER, s);
    if (v) v->num = x;
    return v;
}

static qmt_json *parse_literal(parser *ps) {
    static const struct {
        const char *text;
        qmt_json_type type;
    } lits[] = {{"null", QMT_JSON_NULL}, {"true", QMT_JSON_TRUE}, {"false", QMT_JSON_FALSE}};
    size_t left = (size_t)(ps->end - ps->p);
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++) {
        size_t n = strlen(lits[i].text);
        if (memcmp(ps->p, lits[i].text, left < n ? left : n) != 0) continue;
        if (left < n) return fail_eof(ps);
        const uint8_t *s = ps->p;
        ps->p += n;
        return new_node(ps, lits[i].type, s);
    }
    return fail(ps, ps->p, "expected value");
}

static qmt_json *parse_value(parser *ps, int depth);

/* Shared loop of arrays and objects: elements separated by ',' up to `close`. */
static qmt_json *parse_container(parser *ps, int depth, qmt_json_type type) {
    char close = type == QMT_JSON_ARRAY ? ']' : '}';
    if (depth >= MAX_DEPTH) return fail(ps, ps->p, "nesting deeper than %d levels", MAX_DEPTH);
    qmt_json *v = new_node(ps, type, ps->p);
    if (!v) return NULL;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return v;
    }
    qmt_json **tail = &v->child;
    for (;;) {
        const char *key = NULL;
        if (type == QMT_JSON_OBJECT) {
            size_t key_len;
            skip_ws(ps);
            if (ps->p >= ps->end) return fail_eof(ps);
            if (*ps->p != '"') return fail(ps, ps->p, "expected string key");
            if (!(key = parse_string(ps, &key_len))) return NULL;
            skip_ws(ps);
            if (ps->p >= ps->end) return fail_eof(ps);
            if (*ps->p != ':') return fail(ps, ps->p, "expected ':'");
            ps->p++;
        }
        qmt_json *item = parse_value(ps, depth + 1);
        if (!item) return NULL;
        item->key = key;
        *tail = item;
        tail = &item->next;
        v->len++;
        skip_ws(ps);
        if (ps->p >= ps->end) return fail_eof(ps);
        if (*ps->p == close) break;
        if (*ps->p != ',') return fail(ps, ps->p, "expected ',' or '%c'", close);
        ps->p++;
    }
    ps->p++;
    return v;
}

static qmt_json *parse_value(parser *ps, int depth) {
    skip_ws(ps);
    if (ps->p >= ps->end) return fail_eof(ps);
    const uint8_t *s = ps->p;
    qmt_json *v;
    switch (*s) {
    case '{': v = parse_container(ps, depth, QMT_JSON_OBJECT); break;
    case '[': v = parse_container(ps, depth, QMT_JSON_ARRAY); break;
    case '"': {
        size_t len;
        const char *str = parse_string(ps, &len);
        v = str ? new_node(ps, QMT_JSON_STRING, s) : NULL;
        if (v) {
            v->str = str;
            v->len = len;
        }
        break;
    }
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9': v = parse_number(ps); break;
    default: v = parse_literal(ps); break;
    }
    if (v) v->raw.len = (size_t)(ps->p - s);
    return v;
}

qmt_json *qmt_json_parse(qmt_slice text, qmt_json_doc *doc, char *err, size_t err_len) {
    static const uint8_t nothing = 0; /* NULL + 0 is undefined in C: give empty input a real address */
    const uint8_t *data = text.len ? text.data : &nothing;
    if (err && err_len) err[0] = 0;
    doc->arena = NULL;
    arena *a = calloc(1, sizeof *a);
    parser ps = {data, data, data + text.len, a, err, err_len, 0};
    if (!a) return oom(&ps);
    /* Nodes take several times the bytes of small values, so start near the input's size. */
    a->next_cap = 1024 + text.len;
    qmt_json *root = text.len ? parse_value(&ps, 0) : fail_eof(&ps);
    if (root) {
        skip_ws(&ps);
        if (ps.p != ps.end) root = fail(&ps, ps.p, "trailing characters");
    }
    if (!root) {
        arena_free(a);
        return NULL;
    }
    doc->arena = a;
    return root;
}

void qmt_json_doc_free(qmt_json_doc *doc) {
    if (doc->arena) arena_free(doc->arena);
    doc->arena = NULL;
}

/* ---- getters ------------------------------------------------------------------------------------ */

qmt_json *qmt_json_get(const qmt_json *object, const char *key) {
    if (!object || object->type != QMT_JSON_OBJECT) return NULL;
    qmt_json *found = NULL;
    qmt_json_foreach(item, object) /* the last duplicate wins, as in serde_json::Value and Python */
        if (strcmp(item->key, key) == 0) found = item;
    return found;
}

qmt_json *qmt_json_at(const qmt_json *array, size_t index) {
    if (!array || array->type != QMT_JSON_ARRAY) return NULL;
    qmt_json_foreach(item, array)
        if (index-- == 0) return item;
    return NULL;
}

const char *qmt_json_string(const qmt_json *v, const char *fallback) {
    return v && v->type == QMT_JSON_STRING ? v->str : fallback;
}

double qmt_json_number(const qmt_json *v, double fallback) {
    return v && v->type == QMT_JSON_NUMBER ? v->num : fallback;
}

int qmt_json_boolean(const qmt_json *v, int fallback) {
    if (!v || (v->type != QMT_JSON_TRUE && v->type != QMT_JSON_FALSE)) return fallback;
    return v->type == QMT_JSON_TRUE;
}

int qmt_json_is_null(const qmt_json *v) { return !v || v->type == QMT_JSON_NULL; }

int qmt_json_is_integer(const qmt_json *v, double min, double max) {
    if (!v || v->type != QMT_JSON_NUMBER || v->num < min || v->num > max) return 0;
    for (size_t i = 0; i < v->raw.len; i++)
        if (v->raw.data[i] == '.' || v->raw.data[i] == 'e' || v->raw.data[i] == 'E') return 0;
    return 1;
}

static void write_usage(qmt_buf *b, qmt_usage u) {
    qmt_buf_printf(b, "{\"input_tokens\":%zu,\"output_tokens\":%zu,\"reasoning_tokens\":0,\"cache_read\":0,"
                      "\"cache_write\":0}",
                   u.input_tokens, u.output_tokens);
}

void qmt_json_write_chat_response(qmt_buf *b, const char *text, size_t n, qmt_usage usage, const char *finish_reason) {
    qmt_buf_puts(b, "{\"text\":");
    qmt_json_write_string(b, text, n);
    qmt_buf_puts(b, ",\"tool_calls\":null,\"thinking\":null,\"usage\":");
    write_usage(b, usage);
    qmt_buf_printf(b, ",\"finish_reason\":\"%s\"}", finish_reason);
}

void qmt_yield_text(qmt_buf *scratch, const char *text, size_t n) {
    qmt_buf_reset(scratch);
    qmt_buf_puts(scratch, "{\"chunk\":{\"text\":");
    qmt_json_write_string(scratch, text, n);
    qmt_buf_puts(scratch, "},\"usage\":null}");
    qmt_yield_chunk(qmt_buf_slice(scratch));
}

void qmt_yield_end(qmt_buf *scratch, qmt_usage usage, const char *finish_reason) {
    qmt_buf_reset(scratch);
    qmt_buf_puts(scratch, "{\"chunk\":{\"usage\":");
    write_usage(scratch, usage);
    qmt_buf_puts(scratch, "},\"usage\":");
    write_usage(scratch, usage);
    qmt_buf_putc(scratch, '}');
    qmt_yield_chunk(qmt_buf_slice(scratch));
    qmt_buf_reset(scratch);
    qmt_buf_printf(scratch, "{\"chunk\":{\"done\":{\"finish_reason\":\"%s\"}},\"usage\":null}", finish_reason);
    qmt_yield_chunk(qmt_buf_slice(scratch));
}

int32_t qmt_op_init_logging(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    char err[128];
    const qmt_json *level = qmt_json_parse(in, &doc, err, sizeof err);
    int32_t rc = 0;
    if (!level) rc = qmt_fail(out, "json_error", "invalid JSON: %s", err);
    else if (!qmt_json_is_integer(level, 0, 255))
        rc = qmt_fail(out, "json_error", "init_logging: expected a log level from 0 (off) to 5 (trace)");
    else qmt_set_log_level((int)level->num);
    qmt_json_doc_free(&doc);
    return rc;
}

static int field_ok(const qmt_field *f, const qmt_json *v) {
    switch (f->kind) {
    case QMT_FIELD_STRING:
        if (v->type != QMT_JSON_STRING) return 0;
        if (!f->choices) return 1;
        for (const char *const *c = f->choices; *c; c++)
            if (strcmp(*c, v->str) == 0) return 1;
        return 0;
    case QMT_FIELD_STRINGS:
        if (v->type != QMT_JSON_ARRAY) return 0;
        qmt_json_foreach(item, v) if (item->type != QMT_JSON_STRING) return 0;
        return 1;
    case QMT_FIELD_NUMBER: return v->type == QMT_JSON_NUMBER && v->num >= f->min && v->num <= f->max;
    case QMT_FIELD_INTEGER: return qmt_json_is_integer(v, f->min, f->max);
    case QMT_FIELD_BOOLEAN: return v->type == QMT_JSON_TRUE || v->type == QMT_JSON_FALSE;
    }
    return 0;
}

int32_t qmt_check_fields(const qmt_json *cfg, const qmt_field *fields, size_t n_fields, qmt_buf *out) {
    if (!cfg) return qmt_fail(out, "json_error", "missing field `cfg`");
    if (cfg->type != QMT_JSON_OBJECT) return qmt_fail(out, "json_error", "cfg: expected an object");
    qmt_json_foreach(item, cfg) {
        const qmt_field *f = NULL;
        for (size_t i = 0; i < n_fields && !f; i++)
            if (strcmp(fields[i].name, item->key) == 0) f = &fields[i];
        if (!f) {
            qmt_buf names = {0};
            for (size_t i = 0; i < n_fields; i++) qmt_buf_printf(&names, "%s`%s`", i ? ", " : "", fields[i].name);
            int32_t rc = qmt_fail(out, "json_error", "cfg: unknown field `%.64s`, expected one of %s", item->key,
                                  names.data ? (const char *)names.data : "nothing");
            qmt_buf_free(&names);
            return rc;
        }
        if (item->type != QMT_JSON_NULL && !field_ok(f, item))
            return qmt_fail(out, "json_error", "cfg.%s: expected %s, got %.*s", f->name, f->expected,
                            (int)(item->raw.len > 64 ? 64 : item->raw.len), (const char *)item->raw.data);
    }
    return 0;
}

/* A byte is written as a plain non-negative integer literal ("7", not "7.0" or "-0"), as serde's u8 wants. */
static int byte_value(const qmt_json *v) {
    if (v->type != QMT_JSON_NUMBER || v->raw.len == 0 || v->raw.len > 3) return -1;
    int x = 0;
    for (size_t i = 0; i < v->raw.len; i++) {
        if (v->raw.data[i] < '0' || v->raw.data[i] > '9') return -1;
        x = x * 10 + (v->raw.data[i] - '0');
    }
    return x <= 255 ? x : -1;
}

int qmt_json_bytes(const qmt_json *array, qmt_buf *out) {
    if (!array || array->type != QMT_JSON_ARRAY) return -1;
    size_t start = out->len;
    qmt_json_foreach(item, array) {
        int x = byte_value(item);
        if (x < 0) {
            out->len = start; /* leave `out` as it was */
            if (out->data) out->data[start] = 0;
            return -1;
        }
        qmt_buf_putc(out, (char)x);
    }
    return 0;
}

/* ---- writers ------------------------------------------------------------------------------------ */

/* Escapes what serde_json escapes (quote, backslash, control characters). Invalid UTF-8 becomes U+FFFD
   so the output is always valid JSON, as String::from_utf8_lossy would have it. */
void qmt_json_write_string(qmt_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    qmt_buf_putc(b, '"');
    if (n == 0) { /* s may be NULL here, and NULL + 0 is undefined in C */
        qmt_buf_putc(b, '"');
        return;
    }
    const uint8_t *p = (const uint8_t *)s, *end = p + n, *run = p;
    while (p < end) {
        uint8_t c = *p;
        size_t len = c < 0x80 ? 1 : utf8_len(p, (size_t)(end - p));
        if (c >= 0x20 && c != '"' && c != '\\' && len) {
            p += len; /* part of the current unescaped run */
            continue;
        }
        qmt_buf_put(b, run, (size_t)(p - run));
        switch (c) {
        case '"': qmt_buf_puts(b, "\\\""); break;
        case '\\': qmt_buf_puts(b, "\\\\"); break;
        case '\b': qmt_buf_puts(b, "\\b"); break;
        case '\f': qmt_buf_puts(b, "\\f"); break;
        case '\n': qmt_buf_puts(b, "\\n"); break;
        case '\r': qmt_buf_puts(b, "\\r"); break;
        case '\t': qmt_buf_puts(b, "\\t"); break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                qmt_buf_put(b, esc, sizeof esc);
            } else {
                qmt_buf_puts(b, "\xEF\xBF\xBD");
            }
        }
        run = ++p;
    }
    qmt_buf_put(b, run, (size_t)(p - run));
    qmt_buf_putc(b, '"');
}

void qmt_json_write_cstr(qmt_buf *b, const char *s) {
    if (s) qmt_json_write_string(b, s, strlen(s));
    else qmt_buf_puts(b, "null");
}

/* printf's %g writes exponents as "e-05"/"e+20"; JSON allows that, but "e-5"/"e20" is what serde writes. */
static void put_trimmed_exponent(qmt_buf *b, const char *text) {
    const char *e = strchr(text, 'e');
    if (!e) {
        qmt_buf_puts(b, text);
        return;
    }
    qmt_buf_put(b, text, (size_t)(e - text + 1));
    e++;
    if (*e == '+') e++;
    else if (*e == '-') qmt_buf_putc(b, *e++);
    while (e[0] == '0' && e[1]) e++;
    qmt_buf_puts(b, e);
}

/* The shortest %.<p>g text that reads back as x. Below the type's decimal precision (15 digits for
   double, 7 for float) the correctly rounded p-digit text is the shortest one whenever any p-digit text
   round-trips, so one probe there settles short numbers; longer ones need at most two more probes. */
static void put_shortest(qmt_buf *b, double x, int is_float, int first, int last) {
    char text[40];
    for (int prec = first; prec <= last; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, x);
        double back = is_float ? (double)strtof(text, NULL) : strtod(text, NULL);
        if (back == x) break;
    }
    put_trimmed_exponent(b, text);
    if (is_float && !strpbrk(text, ".e")) qmt_buf_puts(b, ".0"); /* serde writes f32 1 as 1.0 */
}

void qmt_json_write_number(qmt_buf *b, double x) {
    if (!isfinite(x)) {
        qmt_buf_puts(b, "null");
    } else if (x == trunc(x) && fabs(x) < 1e15) {
        qmt_buf_printf(b, "%.0f", x);
    } else {
        put_shortest(b, x, 0, 15, 17);
    }
}

void qmt_json_write_float(qmt_buf *b, float x) {
    if (isfinite(x)) put_shortest(b, x, 1, 6, 9);
    else qmt_buf_puts(b, "null");
}

void qmt_json_write_bytes(qmt_buf *b, const uint8_t *p, size_t n) {
    qmt_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        char digits[4];
        size_t k = 0;
        uint8_t c = p[i];
        if (c >= 100) digits[k++] = (char)('0' + c / 100);
        if (c >= 10) digits[k++] = (char)('0' + c / 10 % 10);
        digits[k++] = (char)('0' + c % 10);
        if (i) qmt_buf_putc(b, ',');
        qmt_buf_put(b, digits, k);
    }
    qmt_buf_putc(b, ']');
}

void qmt_json_write_raw(qmt_buf *b, const qmt_json *v) {
    if (v) qmt_buf_put(b, v->raw.data, v->raw.len);
    else qmt_buf_puts(b, "null");
}

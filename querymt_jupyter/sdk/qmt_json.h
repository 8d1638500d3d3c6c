/*
 * qmt_json.h - a small JSON reader and writer for querymt-jupyter plugins.
 *
 * Reading: qmt_json_parse builds a tree in an arena owned by a qmt_json_doc. Every value remembers its
 * exact source span, so a plugin can pass a sub-document through byte for byte (qmt_json_write_raw):
 * key order and number spelling survive (QueryMT's serde_json keeps insertion order).
 * Writing: append to a qmt_buf; the helpers escape strings and write byte arrays the way the wire spec
 * needs (HTTP bodies are JSON arrays of integers, section 7.7).
 */
#ifndef QMT_JSON_H
#define QMT_JSON_H

#include "querymt_plugin.h"

typedef enum {
    QMT_JSON_NULL,
    QMT_JSON_FALSE,
    QMT_JSON_TRUE,
    QMT_JSON_NUMBER,
    QMT_JSON_STRING,
    QMT_JSON_ARRAY,
    QMT_JSON_OBJECT
} qmt_json_type;

typedef struct qmt_json qmt_json;
struct qmt_json {
    qmt_json_type type;
    const char *key;    /* member name (decoded, NUL-terminated) when inside an object, else NULL */
    const char *str;    /* decoded NUL-terminated string for QMT_JSON_STRING (may contain NULs: see len) */
    size_t len;         /* string length in bytes, or number of children for arrays/objects */
    double num;         /* value for QMT_JSON_NUMBER */
    qmt_json *child;    /* first element/member */
    qmt_json *next;     /* next sibling */
    qmt_slice raw;      /* the exact source bytes of this value */
};

typedef struct {
    void *arena; /* opaque; freed by qmt_json_doc_free */
} qmt_json_doc;

/* Parse `text`. Returns the root, or NULL with a message in err (e.g. "expected ':' at byte 17").
   `doc` need not be initialised; after a failure it holds nothing (qmt_json_doc_free is then a no-op).
   Strings must be valid UTF-8, \u escapes must pair surrogates, nesting is limited to 128 levels
   (serde_json's limit). */
qmt_json *qmt_json_parse(qmt_slice text, qmt_json_doc *doc, char *err, size_t err_len);
void qmt_json_doc_free(qmt_json_doc *doc);

qmt_json *qmt_json_get(const qmt_json *object, const char *key); /* NULL when absent or not an object */
qmt_json *qmt_json_at(const qmt_json *array, size_t index);     /* NULL when out of range */
/* Typed getters with a fallback for absent / null / wrong-typed values. */
const char *qmt_json_string(const qmt_json *v, const char *fallback);
double qmt_json_number(const qmt_json *v, double fallback);
int qmt_json_boolean(const qmt_json *v, int fallback);
int qmt_json_is_null(const qmt_json *v); /* true for NULL pointers and JSON null */
/* Decode a JSON array of integers 0..255 into bytes (appended to out). Returns 0, or -1 if malformed. */
int qmt_json_bytes(const qmt_json *array, qmt_buf *out);

#define qmt_json_foreach(item, parent) for (qmt_json *item = (parent) ? (parent)->child : 0; item; item = item->next)

/* An integer literal ("12", not "12.0" or "1e1", as serde's integer types want) within [min, max]. */
int qmt_json_is_integer(const qmt_json *v, double min, double max);

/* ---- checking a plugin's config object against its fields, the way serde reads a typed config ---- */

typedef enum { QMT_FIELD_STRING, QMT_FIELD_STRINGS, QMT_FIELD_NUMBER, QMT_FIELD_INTEGER, QMT_FIELD_BOOLEAN } qmt_field_kind;

typedef struct {
    const char *name;
    qmt_field_kind kind;
    double min, max;             /* for numbers and integers */
    const char *expected;        /* for the error message, e.g. "a number from 0 to 2" */
    const char *const *choices;  /* for strings: the allowed values, NULL-terminated; NULL allows any */
} qmt_field;

/* Checks that cfg is an object whose members are all among `fields` and of their kind (null counts as
   absent, as for serde's Option fields). Returns 0, or qmt_fail's json_error naming the field: an unknown
   one lists the valid names, a wrong value says what was expected and what came. */
int32_t qmt_check_fields(const qmt_json *cfg, const qmt_field *fields, size_t n_fields, qmt_buf *out);

/* The init_logging operation most plugins want (wire spec: the host's maximum level as a bare JSON number,
   0 off .. 5 trace): checks it and passes it to qmt_set_log_level. Use it in the ops list directly:
   X(init_logging, qmt_op_init_logging). */
int32_t qmt_op_init_logging(qmt_slice in, qmt_buf *out);

/* ---- generation B replies (wire spec section 6): what chat and chat_stream send ------------------ */

typedef struct {
    size_t input_tokens, output_tokens;
} qmt_usage;

/* A chat answer: {"text":...,"tool_calls":null,"thinking":null,"usage":{...},"finish_reason":"Stop"}. */
void qmt_json_write_chat_response(qmt_buf *b, const char *text, size_t n, qmt_usage usage, const char *finish_reason);
/* chat_stream: a text chunk; then, to finish, the usage chunk and the done chunk. `scratch` holds each chunk
   while it is yielded (one buffer serves the whole stream). */
void qmt_yield_text(qmt_buf *scratch, const char *text, size_t n);
void qmt_yield_end(qmt_buf *scratch, qmt_usage usage, const char *finish_reason);

/* Writers (append to b). */
void qmt_json_write_string(qmt_buf *b, const char *s, size_t n); /* quoted and escaped */
void qmt_json_write_cstr(qmt_buf *b, const char *s);             /* NULL writes null */
void qmt_json_write_number(qmt_buf *b, double x);                /* shortest round-trip form; integers without .0 */
/* An f32 the way serde_json writes one: the shortest form that reads back as the same float, integral
   values with ".0" (1.0, 0.25, -0.5; very large or small magnitudes in exponent form, 1e-7). Non-finite
   values write null (JSON has no NaN/Infinity), as serde_json does. */
void qmt_json_write_float(qmt_buf *b, float x);
void qmt_json_write_bytes(qmt_buf *b, const uint8_t *p, size_t n); /* [1,2,3] */
void qmt_json_write_raw(qmt_buf *b, const qmt_json *v);          /* source span; NULL writes null */

#endif /* QMT_JSON_H */

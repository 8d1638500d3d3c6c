/*
 * echo.c - the bundled offline "echo" provider.
 *
 * A generation B QueryMT plugin (wire spec sections 1 and 6): it answers chat, chat_stream, complete,
 * embed and list_models itself, deterministically and without a network, so notebooks, tests and
 * benchmarks can run anywhere. Built unchanged as Wasm and as a native library; both builds must give
 * byte-identical outputs.
 *
 *   chat         prefix + the text blocks of the last User message, those cut to max_tokens words
 *   chat_stream  the same reply, one chunk per word, then a usage chunk and a done chunk
 *   complete     the prompt's words repeated cyclically, max_tokens words (default 16)
 *   embed        hashed byte-trigram features, L2-normalised (the compute-bound benchmark subject)
 *   noop, echo_bytes  empty and identity operations that measure pure call overhead
 *
 * Config handling mimics QueryMT's typed configs: unknown keys and wrong types are json_errors naming the
 * field; null counts as absent, as for serde's Option fields.
 */
#define QMT_THREAD_SAFE /* no state but the log level */
#include "qmt_json.h"
#include "querymt_plugin.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_COMPLETE_WORDS 16
#define MAX_COMPLETE_WORDS 1048576 /* keeps a huge max_tokens from exhausting memory */

static const char CONFIG_SCHEMA[] =
    "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"title\":\"EchoConfig\",\"type\":\"object\","
    "\"properties\":{"
    "\"model\":{\"description\":\"Model id; the echo models behave the same.\",\"type\":\"string\","
    "\"enum\":[\"echo-1\",\"echo-mini\"],\"default\":\"echo-1\"},"
    "\"system\":{\"description\":\"System prompts (accepted and ignored).\",\"type\":\"array\","
    "\"items\":{\"type\":\"string\"}},"
    "\"temperature\":{\"description\":\"Sampling temperature (accepted; the echo is deterministic).\","
    "\"type\":\"number\",\"minimum\":0,\"maximum\":2},"
    "\"max_tokens\":{\"description\":\"Chat replies echo at most this many words; also the default "
    "completion length.\",\"type\":\"integer\",\"minimum\":1},"
    "\"prefix\":{\"description\":\"Text put before every chat reply.\",\"type\":\"string\","
    "\"default\":\"echo: \"},"
    "\"dimensions\":{\"description\":\"Length of the embedding vectors.\",\"type\":\"integer\","
    "\"minimum\":1,\"maximum\":4096,\"default\":256},"
    "\"stream\":{\"description\":\"Set by the host for streaming calls.\",\"type\":\"boolean\"}"
    "},\"additionalProperties\":false}";

/* ---- input ------------------------------------------------------------------------------------ */

typedef struct {
    const char *prefix;
    size_t prefix_len;
    uint32_t max_tokens; /* 0: not set */
    uint32_t dimensions;
} echo_cfg;

static const char *const MODELS[] = {"echo-1", "echo-mini", NULL};

static const qmt_field FIELDS[] = {
    {"model", QMT_FIELD_STRING, 0, 0, "`echo-1` or `echo-mini`", MODELS},
    {"system", QMT_FIELD_STRINGS, 0, 0, "an array of strings", NULL},
    {"temperature", QMT_FIELD_NUMBER, 0, 2, "a number from 0 to 2", NULL},
    {"max_tokens", QMT_FIELD_INTEGER, 1, 4294967295.0, "an integer from 1 to 4294967295", NULL},
    {"prefix", QMT_FIELD_STRING, 0, 0, "a string", NULL},
    {"dimensions", QMT_FIELD_INTEGER, 1, 4096, "an integer from 1 to 4096", NULL},
    {"stream", QMT_FIELD_BOOLEAN, 0, 0, "a boolean", NULL},
};

/* Checks the cfg object against the schema and reads the values the operations use. */
static int32_t read_cfg(const qmt_json *cfg, echo_cfg *c, qmt_buf *out) {
    int32_t rc = qmt_check_fields(cfg, FIELDS, sizeof FIELDS / sizeof FIELDS[0], out);
    if (rc) return rc;
    const qmt_json *prefix = qmt_json_get(cfg, "prefix");
    c->prefix = qmt_json_string(prefix, "echo: ");
    c->prefix_len = prefix && prefix->type == QMT_JSON_STRING ? prefix->len : strlen(c->prefix);
    c->max_tokens = (uint32_t)qmt_json_number(qmt_json_get(cfg, "max_tokens"), 0);
    c->dimensions = (uint32_t)qmt_json_number(qmt_json_get(cfg, "dimensions"), 256);
    return 0;
}

static int32_t parse_input(qmt_slice in, qmt_json_doc *doc, const qmt_json **root, qmt_buf *out) {
    char err[128];
    *root = qmt_json_parse(in, doc, err, sizeof err);
    return *root ? 0 : qmt_fail(out, "json_error", "invalid JSON: %s", err);
}

/* Parses a request wrapper {"cfg": {...}, ...}; the caller frees doc (also on failure). */
static int32_t open_request(qmt_slice in, qmt_json_doc *doc, const qmt_json **root, echo_cfg *c, qmt_buf *out) {
    int32_t rc = parse_input(in, doc, root, out);
    if (rc) return rc;
    if ((*root)->type != QMT_JSON_OBJECT) return qmt_fail(out, "json_error", "expected a JSON object");
    return read_cfg(qmt_json_get(*root, "cfg"), c, out);
}

/* For operations whose whole input is the cfg object. */
static int32_t check_cfg_input(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    echo_cfg c;
    int32_t rc = parse_input(in, &doc, &root, out);
    if (!rc) rc = read_cfg(root, &c, out);
    qmt_json_doc_free(&doc);
    return rc;
}

/* ---- words ------------------------------------------------------------------------------------ */

static int is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Finds the next whitespace-separated word at or after *pos; returns 0 when there is none. */
static int next_word(const uint8_t *s, size_t n, size_t *pos, size_t *start, size_t *end) {
    size_t i = *pos;
    while (i < n && is_space(s[i])) i++;
    if (i == n) return 0;
    *start = i;
    while (i < n && !is_space(s[i])) i++;
    *end = *pos = i;
    return 1;
}

static size_t count_words(const uint8_t *s, size_t n) {
    size_t pos = 0, start, end, words = 0;
    while (next_word(s, n, &pos, &start, &end)) words++;
    return words;
}

/* Cuts b right after the max-th word from byte `from` on, when more words follow; returns whether it cut. */
static int keep_words(qmt_buf *b, size_t from, uint32_t max) {
    size_t pos = from, start, end;
    for (uint32_t k = 0; k < max; k++)
        if (!next_word(b->data, b->len, &pos, &start, &end)) return 0;
    size_t more_start, more_end;
    if (!next_word(b->data, b->len, &pos, &more_start, &more_end)) return 0;
    b->len = end;
    b->data[end] = 0;
    return 1;
}

/* ---- chat ------------------------------------------------------------------------------------- */

typedef struct {
    qmt_buf text;
    size_t input_tokens, output_tokens;
    int cut; /* finish_reason Length */
} reply;

static const char *const CONTENT_TYPES[] = {"text",     "image",    "image_url",   "pdf",          "audio",
                                            "thinking", "tool_use", "tool_result", "resource_link"};

static int known_content_type(const char *type) {
    for (size_t i = 0; i < sizeof CONTENT_TYPES / sizeof CONTENT_TYPES[0]; i++)
        if (strcmp(CONTENT_TYPES[i], type) == 0) return 1;
    return 0;
}

/* Checks a content block; adds the words of a text block to *words. */
static int32_t check_block(const qmt_json *block, size_t m, size_t k, size_t *words, qmt_buf *out) {
    const char *type = qmt_json_string(qmt_json_get(block, "type"), NULL);
    if (!type) return qmt_fail(out, "json_error", "messages[%zu].content[%zu]: missing field `type`", m, k);
    if (!known_content_type(type))
        return qmt_fail(out, "json_error", "messages[%zu].content[%zu]: unknown content type `%.64s`", m, k, type);
    if (strcmp(type, "text") != 0) return 0;
    const qmt_json *text = qmt_json_get(block, "text");
    if (!text || text->type != QMT_JSON_STRING)
        return qmt_fail(out, "json_error", "messages[%zu].content[%zu]: text blocks need a string `text`", m, k);
    *words += count_words((const uint8_t *)text->str, text->len);
    return 0;
}

static int32_t check_message(const qmt_json *msg, size_t m, size_t *words, qmt_buf *out) {
    if (msg->type != QMT_JSON_OBJECT) return qmt_fail(out, "json_error", "messages[%zu]: expected an object", m);
    const char *role = qmt_json_string(qmt_json_get(msg, "role"), NULL);
    if (!role) return qmt_fail(out, "json_error", "messages[%zu]: missing field `role`", m);
    if (strcmp(role, "User") != 0 && strcmp(role, "Assistant") != 0)
        return qmt_fail(out, "json_error", "messages[%zu].role: unknown variant `%.64s`, expected `User` or `Assistant`",
                        m, role);
    const qmt_json *content = qmt_json_get(msg, "content");
    if (!content || content->type != QMT_JSON_ARRAY)
        return qmt_fail(out, "json_error", "messages[%zu]: `content` must be an array of content blocks", m);
    size_t k = 0;
    qmt_json_foreach(block, content) {
        int32_t rc = check_block(block, m, k++, words, out);
        if (rc) return rc;
    }
    return 0;
}

static void append_text_blocks(qmt_buf *b, const qmt_json *msg) {
    qmt_json_foreach(block, qmt_json_get(msg, "content"))
        if (strcmp(qmt_json_string(qmt_json_get(block, "type"), ""), "text") == 0) {
            const qmt_json *text = qmt_json_get(block, "text");
            qmt_buf_put(b, text->str, text->len);
        }
}

/* Checks messages and tools of an ExtismChatRequest; finds the last User message and counts the words
   of all text blocks. */
static int32_t check_chat_request(const qmt_json *root, const qmt_json **last_user, size_t *words, qmt_buf *out) {
    const qmt_json *messages = qmt_json_get(root, "messages"), *tools = qmt_json_get(root, "tools");
    if (!messages) return qmt_fail(out, "json_error", "missing field `messages`");
    if (messages->type != QMT_JSON_ARRAY) return qmt_fail(out, "json_error", "`messages` must be an array");
    if (!qmt_json_is_null(tools) && tools->type != QMT_JSON_ARRAY)
        return qmt_fail(out, "json_error", "`tools` must be an array or null");
    size_t m = 0;
    qmt_json_foreach(msg, messages) {
        int32_t rc = check_message(msg, m++, words, out);
        if (rc) return rc;
        if (strcmp(qmt_json_get(msg, "role")->str, "User") == 0) *last_user = msg;
    }
    return 0;
}

/* Validates an ExtismChatRequest and builds the reply both chat and chat_stream send. */
static int32_t build_reply(qmt_slice in, reply *r, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root, *last_user = NULL;
    echo_cfg c;
    int32_t rc = open_request(in, &doc, &root, &c, out);
    if (!rc) rc = check_chat_request(root, &last_user, &r->input_tokens, out);
    if (!rc) {
        qmt_buf_put(&r->text, c.prefix, c.prefix_len);
        size_t echoed = r->text.len; /* max_tokens limits the echoed words, not the prefix */
        if (last_user) append_text_blocks(&r->text, last_user);
        if (c.max_tokens) r->cut = keep_words(&r->text, echoed, c.max_tokens);
        r->output_tokens = count_words(r->text.data, r->text.len);
    }
    qmt_json_doc_free(&doc);
    return rc;
}

static qmt_usage usage_of(const reply *r) { return (qmt_usage){r->input_tokens, r->output_tokens}; }

static const char *finish_reason(const reply *r) { return r->cut ? "Length" : "Stop"; }

static int32_t op_chat(qmt_slice in, qmt_buf *out) {
    reply r = {0};
    int32_t rc = build_reply(in, &r, out);
    if (!rc) {
        qmt_json_write_chat_response(out, (const char *)r.text.data, r.text.len, usage_of(&r), finish_reason(&r));
    }
    qmt_buf_free(&r.text);
    return rc;
}

/* One chunk per word with the whitespace after it (the first also carries any leading whitespace), so
   the chunks concatenate to exactly chat's text. */
static void yield_words(qmt_buf *chunk, const qmt_buf *text) {
    size_t pos = 0, from = 0, start, end;
    while (next_word(text->data, text->len, &pos, &start, &end)) {
        while (end < text->len && is_space(text->data[end])) end++;
        qmt_yield_text(chunk, (const char *)text->data + from, end - from);
        from = pos = end;
    }
    if (from < text->len) qmt_yield_text(chunk, (const char *)text->data + from, text->len - from); /* whitespace only */
}

static int32_t op_chat_stream(qmt_slice in, qmt_buf *out) {
    reply r = {0};
    int32_t rc = build_reply(in, &r, out);
    if (!rc) {
        qmt_buf chunk = {0};
        yield_words(&chunk, &r.text);
        qmt_yield_end(&chunk, usage_of(&r), finish_reason(&r));
        qmt_buf_free(&chunk);
    }
    qmt_buf_free(&r.text);
    return rc;
}

/* ---- complete --------------------------------------------------------------------------------- */

/* Reads the CompletionRequest fields; *words gets req.max_tokens, else cfg.max_tokens, else 16. */
static int32_t read_completion(const qmt_json *req, const echo_cfg *c, const qmt_json **prompt, uint32_t *words,
                               qmt_buf *out) {
    if (!req || req->type != QMT_JSON_OBJECT)
        return qmt_fail(out, "json_error", req ? "`req` must be an object" : "missing field `req`");
    *prompt = qmt_json_get(req, "prompt");
    if (!*prompt || (*prompt)->type != QMT_JSON_STRING)
        return qmt_fail(out, "json_error", "req: missing string field `prompt`");
    const qmt_json *suffix = qmt_json_get(req, "suffix"), *max = qmt_json_get(req, "max_tokens");
    const qmt_json *temperature = qmt_json_get(req, "temperature");
    if (!qmt_json_is_null(suffix) && suffix->type != QMT_JSON_STRING)
        return qmt_fail(out, "json_error", "req.suffix: expected a string or null");
    if (!qmt_json_is_null(max) && !qmt_json_is_integer(max, 0, 4294967295.0))
        return qmt_fail(out, "json_error", "req.max_tokens: expected an integer from 0 to 4294967295 or null");
    if (!qmt_json_is_null(temperature) && temperature->type != QMT_JSON_NUMBER)
        return qmt_fail(out, "json_error", "req.temperature: expected a number or null");
    *words = !qmt_json_is_null(max) ? (uint32_t)max->num : c->max_tokens ? c->max_tokens : DEFAULT_COMPLETE_WORDS;
    if (*words > MAX_COMPLETE_WORDS)
        return qmt_fail(out, "invalid_request", "max_tokens %u is more than the echo completes (%d)", (unsigned)*words,
                        MAX_COMPLETE_WORDS);
    return 0;
}

static int32_t op_complete(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root, *prompt;
    echo_cfg c;
    uint32_t words = 0;
    int32_t rc = open_request(in, &doc, &root, &c, out);
    if (!rc) rc = read_completion(qmt_json_get(root, "req"), &c, &prompt, &words, out);
    if (!rc) {
        qmt_buf text = {0};
        const uint8_t *s = (const uint8_t *)prompt->str;
        size_t pos = 0, start, end;
        for (uint32_t k = 0; k < words; k++) {
            if (!next_word(s, prompt->len, &pos, &start, &end)) {
                pos = 0; /* wrap around; a prompt without words gives an empty text */
                if (!next_word(s, prompt->len, &pos, &start, &end)) break;
            }
            qmt_buf_putc(&text, ' ');
            qmt_buf_put(&text, s + start, end - start);
        }
        qmt_buf_puts(out, "{\"text\":");
        qmt_json_write_string(out, (const char *)text.data, text.len);
        qmt_buf_putc(out, '}');
        qmt_buf_free(&text);
    }
    qmt_json_doc_free(&doc);
    return rc;
}

/* ---- embed ------------------------------------------------------------------------------------ */

/* FNV-1a (32-bit) of one byte trigram. */
static uint32_t trigram_hash(uint8_t a, uint8_t b, uint8_t c) {
    uint32_t h = 2166136261u;
    h = (h ^ a) * 16777619u;
    h = (h ^ b) * 16777619u;
    h = (h ^ c) * 16777619u;
    return h;
}

/* One feature per byte: the trigram centred on it, the text padded with a space at each end (so a
   one-letter text has a feature and the empty text none). The hash picks the bucket and, from its top
   bit, the sign, which keeps unrelated texts near orthogonal. */
static void embed_text(const uint8_t *s, size_t n, float *v, uint32_t dims) {
    memset(v, 0, dims * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        uint32_t h = trigram_hash(i ? s[i - 1] : ' ', s[i], i + 1 < n ? s[i + 1] : ' ');
        v[h % dims] += (h >> 31) ? -1.0f : 1.0f;
    }
    double sum = 0;
    for (uint32_t d = 0; d < dims; d++) sum += (double)v[d] * v[d];
    if (sum == 0) return;
    double norm = sqrt(sum);
    for (uint32_t d = 0; d < dims; d++) v[d] = (float)(v[d] / norm);
}

static int32_t check_inputs(const qmt_json *inputs, qmt_buf *out) {
    if (!inputs || inputs->type != QMT_JSON_ARRAY)
        return qmt_fail(out, "json_error", inputs ? "`inputs` must be an array of strings" : "missing field `inputs`");
    size_t i = 0;
    qmt_json_foreach(item, inputs) {
        if (item->type != QMT_JSON_STRING) return qmt_fail(out, "json_error", "inputs[%zu]: expected a string", i);
        i++;
    }
    return 0;
}

static int32_t write_embeddings(const qmt_json *inputs, uint32_t dims, qmt_buf *out) {
    float *v = malloc(dims * sizeof *v);
    if (!v) return qmt_fail(out, "plugin_error", "out of memory");
    qmt_buf_putc(out, '[');
    qmt_json_foreach(item, inputs) {
        embed_text((const uint8_t *)item->str, item->len, v, dims);
        qmt_buf_puts(out, item == inputs->child ? "[" : ",[");
        for (uint32_t d = 0; d < dims; d++) {
            if (d) qmt_buf_putc(out, ',');
            qmt_json_write_float(out, v[d]);
        }
        qmt_buf_putc(out, ']');
    }
    qmt_buf_putc(out, ']');
    free(v);
    return 0;
}

static int32_t op_embed(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc;
    const qmt_json *root;
    echo_cfg c;
    int32_t rc = open_request(in, &doc, &root, &c, out);
    if (!rc) rc = check_inputs(qmt_json_get(root, "inputs"), out);
    if (!rc) rc = write_embeddings(qmt_json_get(root, "inputs"), c.dimensions, out);
    qmt_json_doc_free(&doc);
    return rc;
}

/* ---- the small operations ----------------------------------------------------------------------- */

QMT_TEXT_OP(op_name, "echo")
QMT_TEXT_OP(op_config_schema, CONFIG_SCHEMA)

static int32_t op_from_config(qmt_slice in, qmt_buf *out) {
    int32_t rc = check_cfg_input(in, out);
    if (!rc) qmt_buf_put(out, in.data, in.len);
    return rc;
}

static int32_t op_supports_streaming(qmt_slice in, qmt_buf *out) {
    int32_t rc = check_cfg_input(in, out);
    if (!rc) qmt_buf_puts(out, "true");
    return rc;
}

static int32_t op_list_models(qmt_slice in, qmt_buf *out) {
    int32_t rc = check_cfg_input(in, out);
    if (!rc) qmt_buf_puts(out, "[\"echo-1\",\"echo-mini\"]");
    return rc;
}

#define ECHO_OPS(X)                                                                                            \
    X(name, op_name)                                                                                           \
    X(api_key_name, qmt_op_empty) /* no key */                                                                 \
    X(config_schema, op_config_schema)                                                                         \
    X(init_logging, qmt_op_init_logging)                                                                       \
    X(from_config, op_from_config)                                                                             \
    X(supports_streaming, op_supports_streaming)                                                               \
    X(chat, op_chat)                                                                                           \
    X(chat_stream, op_chat_stream)                                                                             \
    X(embed, op_embed)                                                                                         \
    X(complete, op_complete)                                                                                   \
    X(list_models, op_list_models)                                                                             \
    X(noop, qmt_op_empty)                                                                                      \
    X(echo_bytes, qmt_op_echo)
QMT_PLUGIN(ECHO_OPS)

/*
 * yaml_doc.c - YAML documents to and from JSON values, on libyaml's event
 * parser and emitter.
 */
#include "yaml_doc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common.h"

/*
 * Values a document may expand to, aliases included: a few "billion laughs"
 * aliases of aliases must not exhaust memory.
 */
#define YAML_DOC_MAX_VALUES 1000000

#define TAG_STR "tag:yaml.org,2002:str"

/* ---------------------------------------------------------------------- */
/* Plain scalars (YAML 1.2 core schema)                                     */
/* ---------------------------------------------------------------------- */

enum plain_kind {
    PLAIN_STRING,
    PLAIN_NULL,
    PLAIN_TRUE,
    PLAIN_FALSE,
    PLAIN_INT,
    PLAIN_FLOAT,
    PLAIN_NONFINITE
};

static bool is_one_of(const char *text, const char *const *words)
{
    for (size_t i = 0; words[i] != NULL; i++)
        if (strcmp(text, words[i]) == 0)
            return true;
    return false;
}

static bool all_digits(const char *text, const char *digits)
{
    if (*text == '\0')
        return false;
    for (; *text != '\0'; text++)
        if (strchr(digits, *text) == NULL)
            return false;
    return true;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool is_float(const char *text)
{
    size_t before = 0, after = 0;

    if (*text == '-' || *text == '+')
        text++;
    while (*text >= '0' && *text <= '9') {
        text++;
        before++;
    }
    if (*text == '.') {
        text++;
        while (*text >= '0' && *text <= '9') {
            text++;
            after++;
        }
    }
    if (before == 0 && after == 0)
        return false;
    if (*text == 'e' || *text == 'E') {
        text++;
        if (*text == '-' || *text == '+')
            text++;
        if (!all_digits(text, "0123456789"))
            return false;
        return true;
    }
    return *text == '\0';
}

/* What a plain scalar with this text means. */
static enum plain_kind plain_kind_of(const char *text)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const nonfinite[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                            "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                            ".NaN",  ".NAN",  NULL};
    const char *digits = text + (*text == '-' || *text == '+');

    if (is_one_of(text, nulls))
        return PLAIN_NULL;
    if (is_one_of(text, trues))
        return PLAIN_TRUE;
    if (is_one_of(text, falses))
        return PLAIN_FALSE;
    if (all_digits(digits, "0123456789"))
        return PLAIN_INT;
    if (strncmp(text, "0o", 2) == 0 && all_digits(text + 2, "01234567"))
        return PLAIN_INT;
    if (strncmp(text, "0x", 2) == 0 && all_digits(text + 2, "0123456789abcdefABCDEF"))
        return PLAIN_INT;
    if (is_float(text))
        return PLAIN_FLOAT;
    if (is_one_of(text, nonfinite))
        return PLAIN_NONFINITE;
    return PLAIN_STRING;
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                  */
/* ---------------------------------------------------------------------- */

struct anchor {
    char *name;
    json_t *value; /* owned reference */
};

/* One parse: the libyaml parser, the anchors seen so far, and the error. */
struct reader {
    yaml_parser_t parser;
    struct anchor *anchors;
    size_t anchor_count;
    size_t anchor_cap;
    size_t values; /* values built so far, alias copies included */
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 3, 4))) static int fail_at(struct reader *r, const yaml_mark_t *mark,
                                                         const char *fmt, ...)
{
    char message[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    snprintf(r->err, r->errlen, "line %zu column %zu: %s", mark->line + 1, mark->column + 1,
             message);
    return CF_ERR_INVALID;
}

/* Reads the next event; a syntax error is reported with its position. */
static int next_event(struct reader *r, yaml_event_t *event)
{
    if (yaml_parser_parse(&r->parser, event))
        return CF_OK;
    if (r->parser.error == YAML_MEMORY_ERROR)
        return CF_ERR_NOMEM;
    snprintf(r->err, r->errlen, "line %zu column %zu: %s%s%s", r->parser.problem_mark.line + 1,
             r->parser.problem_mark.column + 1,
             r->parser.problem != NULL ? r->parser.problem : "invalid YAML",
             r->parser.context != NULL ? " " : "",
             r->parser.context != NULL ? r->parser.context : "");
    return CF_ERR_INVALID;
}

static size_t count_values(const json_t *value)
{
    size_t count = 1;
    const char *key;
    json_t *child;
    size_t index;

    if (json_is_object(value)) {
        json_object_foreach((json_t *)value, key, child)
        {
            count += count_values(child);
        }
    } else if (json_is_array(value)) {
        json_array_foreach(value, index, child)
        {
            count += count_values(child);
        }
    }
    return count;
}

static int take_value(struct reader *r, const yaml_mark_t *mark, size_t count)
{
    r->values += count;
    if (r->values > YAML_DOC_MAX_VALUES)
        return fail_at(r, mark, "the document expands to more than %d values", YAML_DOC_MAX_VALUES);
    return CF_OK;
}

/* Keeps value (borrowed) under anchor name (borrowed), when name is not NULL. */
static int add_anchor(struct reader *r, const char *name, json_t *value)
{
    if (name == NULL)
        return CF_OK;
    if (r->anchor_count == r->anchor_cap) {
        size_t cap = r->anchor_cap ? 2 * r->anchor_cap : 8;
        struct anchor *grown = realloc(r->anchors, cap * sizeof(*grown));

        if (grown == NULL)
            return CF_ERR_NOMEM;
        r->anchors = grown;
        r->anchor_cap = cap;
    }
    r->anchors[r->anchor_count].name = strdup(name);
    if (r->anchors[r->anchor_count].name == NULL)
        return CF_ERR_NOMEM;
    r->anchors[r->anchor_count].value = json_incref(value);
    r->anchor_count++;
    return CF_OK;
}

static int read_scalar(struct reader *r, const yaml_event_t *event, json_t **out)
{
    const char *text = (const char *)event->data.scalar.value;
    const char *tag = (const char *)event->data.scalar.tag;
    bool plain = event->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    long long integer;
    char *end;

    if (tag != NULL && strcmp(tag, TAG_STR) != 0 && strcmp(tag, "!") != 0)
        return fail_at(r, &event->start_mark, "unsupported tag %.64s", tag);
    if (tag != NULL || !plain || strlen(text) != event->data.scalar.length) {
        *out = json_stringn(text, event->data.scalar.length);
        return *out ? CF_OK : fail_at(r, &event->start_mark, "a string is not valid UTF-8");
    }
    switch (plain_kind_of(text)) {
    case PLAIN_NULL:
        *out = json_null();
        return CF_OK;
    case PLAIN_TRUE:
        *out = json_true();
        return CF_OK;
    case PLAIN_FALSE:
        *out = json_false();
        return CF_OK;
    case PLAIN_INT:
        errno = 0;
        if (strncmp(text, "0o", 2) == 0)
            integer = strtoll(text + 2, &end, 8);
        else
            integer = strtoll(text, &end, 0 == strncmp(text, "0x", 2) ? 16 : 10);
        if (errno != 0 || *end != '\0')
            return fail_at(r, &event->start_mark, "integer %.64s is out of range", text);
        *out = json_integer(integer);
        break;
    case PLAIN_FLOAT:
        errno = 0;
        *out = json_real(strtod(text, &end));
        if (errno != 0 || *out == NULL) {
            json_decref(*out);
            *out = NULL;
            return fail_at(r, &event->start_mark, "number %.64s is out of range", text);
        }
        break;
    case PLAIN_NONFINITE:
        return fail_at(r, &event->start_mark, "%s has no JSON form", text);
    case PLAIN_STRING:
        *out = json_stringn(text, event->data.scalar.length);
        if (*out == NULL)
            return fail_at(r, &event->start_mark, "a string is not valid UTF-8");
        break;
    }
    return *out ? CF_OK : CF_ERR_NOMEM;
}

static int read_node(struct reader *r, yaml_event_t *event, int depth, json_t **out);

static int read_sequence(struct reader *r, int depth, json_t *array)
{
    yaml_event_t event;
    json_t *item;
    int ret;

    for (;;) {
        ret = next_event(r, &event);
        if (ret != CF_OK)
            return ret;
        if (event.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&event);
            return CF_OK;
        }
        ret = read_node(r, &event, depth + 1, &item);
        yaml_event_delete(&event);
        if (ret != CF_OK)
            return ret;
        if (json_array_append_new(array, item) != 0)
            return CF_ERR_NOMEM;
    }
}

static int read_mapping(struct reader *r, int depth, json_t *object)
{
    yaml_event_t event;
    json_t *value;
    char *key;
    int ret;

    for (;;) {
        ret = next_event(r, &event);
        if (ret != CF_OK)
            return ret;
        if (event.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&event);
            return CF_OK;
        }
        if (event.type != YAML_SCALAR_EVENT) {
            ret = fail_at(r, &event.start_mark, "mapping keys must be scalars");
            yaml_event_delete(&event);
            return ret;
        }
        if (json_object_get(object, (const char *)event.data.scalar.value) != NULL) {
            ret = fail_at(r, &event.start_mark, "duplicate key %.64s", event.data.scalar.value);
            yaml_event_delete(&event);
            return ret;
        }
        key = strdup((const char *)event.data.scalar.value);
        yaml_event_delete(&event);
        if (key == NULL)
            return CF_ERR_NOMEM;
        ret = next_event(r, &event);
        if (ret == CF_OK) {
            ret = read_node(r, &event, depth + 1, &value);
            yaml_event_delete(&event);
        }
        if (ret == CF_OK && json_object_set_new(object, key, value) != 0)
            ret = CF_ERR_NOMEM;
        free(key);
        if (ret != CF_OK)
            return ret;
    }
}

/*
 * Builds the node that event (borrowed; the caller deletes it) starts,
 * reading up to its end, into a new reference *out.
 */
static int read_node(struct reader *r, yaml_event_t *event, int depth, json_t **out)
{
    const char *anchor = NULL;
    json_t *value = NULL;
    int ret;

    *out = NULL;
    if (depth > YAML_DOC_MAX_DEPTH)
        return fail_at(r, &event->start_mark, "nested deeper than %d levels", YAML_DOC_MAX_DEPTH);
    switch (event->type) {
    case YAML_ALIAS_EVENT:
        for (size_t i = r->anchor_count; i > 0; i--) {
            if (strcmp(r->anchors[i - 1].name, (const char *)event->data.alias.anchor) == 0) {
                ret = take_value(r, &event->start_mark, count_values(r->anchors[i - 1].value));
                if (ret != CF_OK)
                    return ret;
                *out = json_deep_copy(r->anchors[i - 1].value);
                return *out ? CF_OK : CF_ERR_NOMEM;
            }
        }
        return fail_at(r, &event->start_mark, "unknown anchor %.64s", event->data.alias.anchor);
    case YAML_SCALAR_EVENT:
        anchor = (const char *)event->data.scalar.anchor;
        ret = read_scalar(r, event, &value);
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = (const char *)event->data.sequence_start.anchor;
        value = json_array();
        ret = value ? read_sequence(r, depth, value) : CF_ERR_NOMEM;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = (const char *)event->data.mapping_start.anchor;
        value = json_object();
        ret = value ? read_mapping(r, depth, value) : CF_ERR_NOMEM;
        break;
    default:
        return fail_at(r, &event->start_mark, "unexpected YAML event");
    }
    if (ret == CF_OK)
        ret = take_value(r, &event->start_mark, 1);
    if (ret == CF_OK)
        ret = add_anchor(r, anchor, value);
    if (ret != CF_OK) {
        json_decref(value);
        return ret;
    }
    *out = value;
    return CF_OK;
}

/* Expects the next event to be of type; deletes it. */
static int expect_event(struct reader *r, yaml_event_type_t type, const char *what)
{
    yaml_event_t event;
    int ret = next_event(r, &event);

    if (ret != CF_OK)
        return ret;
    if (event.type != type)
        ret = fail_at(r, &event.start_mark, "%s", what);
    yaml_event_delete(&event);
    return ret;
}

int yaml_doc_parse(const char *text, size_t len, json_t **out, char *err, size_t errlen)
{
    struct reader r = {.err = err, .errlen = errlen};
    yaml_event_t event;
    json_t *value = NULL;
    bool have_event = false;
    int ret;

    *out = NULL;
    if (!yaml_parser_initialize(&r.parser))
        return CF_ERR_NOMEM;
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
    ret = expect_event(&r, YAML_STREAM_START_EVENT, "expected the start of a stream");
    if (ret != CF_OK)
        goto out;
    ret = next_event(&r, &event);
    if (ret != CF_OK)
        goto out;
    have_event = true;
    if (event.type == YAML_STREAM_END_EVENT) {
        value = json_null();
        goto out;
    }
    yaml_event_delete(&event);
    ret = next_event(&r, &event);
    if (ret != CF_OK) {
        have_event = false;
        goto out;
    }
    ret = read_node(&r, &event, 0, &value);
    if (ret != CF_OK)
        goto out;
    ret = expect_event(&r, YAML_DOCUMENT_END_EVENT, "expected the end of the document");
    if (ret == CF_OK)
        ret = expect_event(&r, YAML_STREAM_END_EVENT, "expected one document, found more");
out:
    if (have_event)
        yaml_event_delete(&event);
    for (size_t i = 0; i < r.anchor_count; i++) {
        free(r.anchors[i].name);
        json_decref(r.anchors[i].value);
    }
    free(r.anchors);
    yaml_parser_delete(&r.parser);
    if (ret != CF_OK) {
        json_decref(value);
        return ret;
    }
    *out = value;
    return CF_OK;
}

/* ---------------------------------------------------------------------- */
/* Writing                                                                  */
/* ---------------------------------------------------------------------- */

static int emit(yaml_emitter_t *emitter, yaml_event_t *event)
{
    /* yaml_emitter_emit() takes the event, also on failure. */
    if (!yaml_emitter_emit(emitter, event))
        return emitter->error == YAML_MEMORY_ERROR ? CF_ERR_NOMEM : CF_ERR_INVALID;
    return CF_OK;
}

static int emit_scalar(yaml_emitter_t *emitter, const char *text, size_t len, bool quote)
{
    yaml_event_t event;

    if (!yaml_scalar_event_initialize(&event, NULL, NULL, (yaml_char_t *)text, (int)len, 1, 1,
                                      quote ? YAML_DOUBLE_QUOTED_SCALAR_STYLE
                                            : YAML_ANY_SCALAR_STYLE))
        return CF_ERR_NOMEM;
    return emit(emitter, &event);
}

/* A string is quoted when it would read back as another type, or holds a NUL. */
static int emit_string(yaml_emitter_t *emitter, const char *text, size_t len)
{
    bool quote = strlen(text) != len || plain_kind_of(text) != PLAIN_STRING;

    return emit_scalar(emitter, text, len, quote);
}

static int emit_value(yaml_emitter_t *emitter, const json_t *value, int depth)
{
    yaml_event_t event;
    const char *key;
    json_t *child;
    size_t index;
    char *text;
    int ret = CF_OK;

    if (depth > YAML_DOC_MAX_DEPTH)
        return CF_ERR_INVALID;
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        if (!yaml_mapping_start_event_initialize(&event, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE))
            return CF_ERR_NOMEM;
        ret = emit(emitter, &event);
        json_object_foreach((json_t *)value, key, child)
        {
            if (ret == CF_OK)
                ret = emit_string(emitter, key, strlen(key));
            if (ret == CF_OK)
                ret = emit_value(emitter, child, depth + 1);
        }
        if (ret != CF_OK)
            return ret;
        if (!yaml_mapping_end_event_initialize(&event))
            return CF_ERR_NOMEM;
        return emit(emitter, &event);
    case JSON_ARRAY:
        if (!yaml_sequence_start_event_initialize(&event, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE))
            return CF_ERR_NOMEM;
        ret = emit(emitter, &event);
        json_array_foreach(value, index, child)
        {
            if (ret == CF_OK)
                ret = emit_value(emitter, child, depth + 1);
        }
        if (ret != CF_OK)
            return ret;
        if (!yaml_sequence_end_event_initialize(&event))
            return CF_ERR_NOMEM;
        return emit(emitter, &event);
    case JSON_STRING:
        return emit_string(emitter, json_string_value(value), json_string_length(value));
    case JSON_INTEGER:
    case JSON_REAL:
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL:
        /* jansson writes reals with a fraction or exponent, so they read back as floats. */
        text = json_dumps(value, JSON_ENCODE_ANY);
        if (text == NULL)
            return CF_ERR_NOMEM;
        ret = emit_scalar(emitter, text, strlen(text), false);
        free(text);
        return ret;
    }
    return CF_ERR_INVALID;
}

int yaml_doc_emit(const json_t *value, char **out)
{
    yaml_emitter_t emitter;
    yaml_event_t event;
    char *buffer = NULL;
    size_t size = 0;
    FILE *stream;
    int ret = CF_ERR_NOMEM;

    *out = NULL;
    stream = open_memstream(&buffer, &size);
    if (stream == NULL)
        return CF_ERR_NOMEM;
    if (!yaml_emitter_initialize(&emitter)) {
        fclose(stream);
        free(buffer);
        return CF_ERR_NOMEM;
    }
    yaml_emitter_set_output_file(&emitter, stream);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, -1);
    if (!yaml_stream_start_event_initialize(&event, YAML_UTF8_ENCODING))
        goto out;
    ret = emit(&emitter, &event);
    if (ret != CF_OK)
        goto out;
    ret = CF_ERR_NOMEM;
    if (!yaml_document_start_event_initialize(&event, NULL, NULL, NULL, 1))
        goto out;
    ret = emit(&emitter, &event);
    if (ret == CF_OK)
        ret = emit_value(&emitter, value, 0);
    if (ret != CF_OK)
        goto out;
    ret = CF_ERR_NOMEM;
    if (!yaml_document_end_event_initialize(&event, 1))
        goto out;
    ret = emit(&emitter, &event);
    if (ret != CF_OK)
        goto out;
    ret = CF_ERR_NOMEM;
    if (!yaml_stream_end_event_initialize(&event))
        goto out;
    ret = emit(&emitter, &event);
out:
    yaml_emitter_delete(&emitter);
    if (fclose(stream) != 0 && ret == CF_OK)
        ret = CF_ERR_NOMEM;
    if (ret != CF_OK) {
        free(buffer);
        return ret;
    }
    *out = buffer;
    return CF_OK;
}

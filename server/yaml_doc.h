/*
 * yaml_doc.h - YAML documents to and from JSON values (libyaml), for the
 * command-line client's job files and exports.
 *
 * Reading follows the YAML 1.2 core schema for plain (unquoted) scalars:
 * null (null, Null, NULL, ~, empty), booleans (true/false in those three
 * spellings), integers (decimal, 0o octal, 0x hexadecimal), floats (decimal
 * with a fraction or exponent). Every quoted or block scalar, and every
 * other plain scalar, is a string; a `!!str` tag makes any scalar a string.
 * Mapping keys must be scalars and unique. Aliases are followed (up to a
 * nesting depth of YAML_DOC_MAX_DEPTH); .inf and .nan, which JSON cannot
 * hold, are refused.
 *
 * Writing quotes every string that would read back as something else, so
 * yaml_doc_parse(yaml_doc_emit(v)) equals v for every JSON value v.
 */
#ifndef CF_YAML_DOC_H
#define CF_YAML_DOC_H

#include <jansson.h>
#include <stddef.h>

#define YAML_DOC_MAX_DEPTH 64

/*
 * Parses text (len bytes, one YAML document; an empty stream is null) into a
 * new reference *out. Returns CF_OK, or CF_ERR_INVALID with a message naming
 * the line and column in err (*out is NULL), or CF_ERR_NOMEM.
 */
int yaml_doc_parse(const char *text, size_t len, json_t **out, char *err, size_t errlen);

/*
 * Writes value (borrowed) as a block-style YAML document into a new
 * NUL-terminated string *out, which the caller frees. Returns CF_OK,
 * CF_ERR_NOMEM, or CF_ERR_INVALID when the emitter refuses (*out is NULL).
 */
int yaml_doc_emit(const json_t *value, char **out);

#endif

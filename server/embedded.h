/*
 * embedded.h - files compiled into the binary by server/embed.cmake: the
 * SQL migrations, the OpenAPI document and the dashboard under web/.
 */
#ifndef CF_EMBEDDED_H
#define CF_EMBEDDED_H

#include <stddef.h>

struct embedded_file {
    const char *name;          /* "0001_initial.sql", or "/index.html" for web files */
    const unsigned char *data; /* NUL-terminated */
    size_t size;               /* bytes, without the NUL */
};

/* Migrations sorted by name, then an entry with name NULL. */
extern const struct embedded_file embedded_migrations[];
/* Web files by path, then an entry with name NULL. */
extern const struct embedded_file embedded_web[];
extern const struct embedded_file embedded_openapi;
/* The same document as JSON (api/yaml2json.py at build time). */
extern const struct embedded_file embedded_openapi_json;

#endif

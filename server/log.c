/*
 * log.c - text and JSON log lines to stderr.
 */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

static enum log_level log_min_level = LOG_INFO;
static bool log_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, bool json)
{
    log_min_level = level;
    log_json = json;
}

int log_parse_level(const char *name, enum log_level *level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (enum log_level)i;
            return CF_OK;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *level = LOG_WARN;
        return CF_OK;
    }
    return CF_ERR_INVALID;
}

bool log_enabled(enum log_level level)
{
    return level >= log_min_level;
}

const char *log_quote(const char *s, char *buf, size_t len)
{
    size_t n = 0;

    if (len == 0)
        return buf;
    for (; s != NULL && *s != '\0' && n + 2 < len; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            buf[n++] = '\\';
        buf[n++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    buf[n] = '\0';
    return buf;
}

/*
 * Splits "k=v k2=\"a b\"" into the JSON object. A malformed pair is kept
 * whole under "detail" rather than lost.
 */
static void add_pairs(json_t *obj, const char *pairs)
{
    const char *p = pairs;
    char key[64], value[2048];

    while (*p != '\0') {
        size_t kn = 0, vn = 0;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        while (*p != '\0' && *p != '=' && *p != ' ' && kn + 1 < sizeof(key))
            key[kn++] = *p++;
        key[kn] = '\0';
        if (*p != '=') {
            json_object_set_new(obj, "detail", json_string(key));
            while (*p != '\0' && *p != ' ')
                p++;
            continue;
        }
        p++;
        if (*p == '"') {
            p++;
            while (*p != '\0' && *p != '"' && vn + 1 < sizeof(value)) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                value[vn++] = *p++;
            }
            if (*p == '"')
                p++;
        } else {
            while (*p != '\0' && *p != ' ' && vn + 1 < sizeof(value))
                value[vn++] = *p++;
        }
        value[vn] = '\0';
        json_object_set_new(obj, key, json_string(value));
    }
}

void log_write(enum log_level level, const char *msg, const char *fmt, ...)
{
    char pairs[4096], ts[CF_TIME_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(pairs, sizeof(pairs), fmt, ap);
    va_end(ap);
    cf_format_time(cf_wall_ms(), ts);

    if (log_json) {
        json_t *obj = json_object();
        char *line;

        json_object_set_new(obj, "ts", json_string(ts));
        json_object_set_new(obj, "level", json_string(level_names[level]));
        json_object_set_new(obj, "msg", json_string(msg));
        add_pairs(obj, pairs);
        line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line != NULL)
            fprintf(stderr, "%s\n", line);
        free(line);
        json_decref(obj);
    } else {
        fprintf(stderr, "%s %s %s%s%s\n", ts, level_names[level], msg, pairs[0] ? " " : "", pairs);
    }
}

/*
 * log.c - text and JSON log lines to standard error or a file.
 *
 * Each line goes out in one write() on log_fd (appending to a file, whole
 * lines from different threads do not interleave; a pipe keeps that promise
 * only for lines up to PIPE_BUF bytes). log_reopen() swaps the file under
 * the same descriptor number with dup3(), which is atomic: writers need no
 * lock.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static enum log_level log_min_level = LOG_INFO;
static bool log_json;
static int log_fd = STDERR_FILENO;
static char *log_path; /* the file opened by log_open_file(); NULL for standard error */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, bool json)
{
    log_min_level = level;
    log_json = json;
}

/* A regular log file is for its owner only, also one created before with a wider mode. */
static void owner_only(int fd)
{
    struct stat st;

    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0)
        fchmod(fd, st.st_mode & 0700);
}

int log_open_file(const char *path, char *err, size_t errlen)
{
    char *copy;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0) {
        snprintf(err, errlen, "cannot open the log file %s: %s", path, strerror(errno));
        return CF_ERR_IO;
    }
    owner_only(fd);
    copy = strdup(path);
    if (copy == NULL) {
        close(fd);
        snprintf(err, errlen, "cannot open the log file %s: out of memory", path);
        return CF_ERR_NOMEM;
    }
    free(log_path);
    log_path = copy;
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    return CF_OK;
}

int log_reopen(void)
{
    int fd;

    if (log_path == NULL)
        return CF_OK;
    fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return CF_ERR_IO;
    owner_only(fd);
    /* dup3, not dup2: the descriptor keeps its close-on-exec flag. */
    if (dup3(fd, log_fd, O_CLOEXEC) < 0) {
        close(fd);
        return CF_ERR_IO;
    }
    close(fd);
    return CF_OK;
}

void log_close(void)
{
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = STDERR_FILENO;
    free(log_path);
    log_path = NULL;
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
 * The keys whose values are integers wherever they are logged. A field's
 * JSON type depends on its key only, never on one value, so that a log
 * store that fixes a field's type from its first line never meets the
 * other type (a job named "123" stays a string).
 */
static bool numeric_key(const char *key)
{
    static const char *const keys[] = {"acks",  "attempt", "attempts",    "count", "fences",
                                       "held",  "highest", "http_status", "jobs",  "next",
                                       "nodes", "ordinal", "runs",        "slot",  "t",
                                       "taken", "token",   "version",     "writes"};
    size_t len = strlen(key);

    if (len > 3 && strcmp(key + len - 3, "_ms") == 0)
        return true;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(key, keys[i]) == 0)
            return true;
    return false;
}

/* A JSON integer for a numeric key holding a decimal that fits in 63 bits, else a string. */
static json_t *field_value(const char *key, const char *value, bool quoted)
{
    const char *digits = value + (value[0] == '-');
    size_t len = strlen(digits);

    if (quoted || !numeric_key(key) || len == 0 || len > 18 || strspn(digits, "0123456789") != len)
        return json_string(value);
    return json_integer(strtoll(value, NULL, 10));
}

/*
 * Splits "k=v k2=\"a b\"" into the JSON object: integers of numeric keys as
 * numbers, everything else as strings. A malformed pair is kept whole under
 * "detail" rather than lost, and a field never replaces ts, level or msg.
 */
static void add_pairs(json_t *obj, const char *pairs)
{
    const char *p = pairs;
    char key[64], value[2048];

    while (*p != '\0') {
        size_t kn = 0, vn = 0;
        bool quoted = false;

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
            quoted = true;
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
        if (strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0)
            continue;
        json_object_set_new(obj, key, field_value(key, value, quoted));
    }
}

/* Writes one whole line to fd in one write(), retrying on a signal or a short write. */
static void write_line(int fd, const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, line, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        line += n;
        len -= (size_t)n;
    }
}

/* Formats one JSON line (ts, level, msg, then the pairs) into a string the caller frees; NULL on
 * failure. */
static char *json_line(enum log_level level, const char *msg, const char *pairs, size_t *len)
{
    char ts[CF_TIME_LEN];
    json_t *obj = json_object();
    char *text, *grown;

    cf_format_time(cf_wall_ms(), ts);
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    json_object_set_new(obj, "msg", json_string(msg));
    add_pairs(obj, pairs);
    text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(obj);
    if (text == NULL)
        return NULL;
    *len = strlen(text);
    grown = realloc(text, *len + 2);
    if (grown == NULL) {
        free(text);
        return NULL;
    }
    grown[(*len)++] = '\n';
    grown[*len] = '\0';
    return grown;
}

void log_write(enum log_level level, const char *msg, const char *fmt, ...)
{
    char pairs[4096], ts[CF_TIME_LEN], line[4096 + 256];
    va_list ap;
    int len;

    va_start(ap, fmt);
    vsnprintf(pairs, sizeof(pairs), fmt, ap);
    va_end(ap);

    if (log_json) {
        size_t json_len;
        char *text = json_line(level, msg, pairs, &json_len);

        if (text != NULL)
            write_line(log_fd, text, json_len);
        free(text);
        return;
    }
    cf_format_time(cf_wall_ms(), ts);
    len = snprintf(line, sizeof(line), "%s %s %s%s%s\n", ts, level_names[level], msg,
                   pairs[0] ? " " : "", pairs);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(line)) {
        len = (int)sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    write_line(log_fd, line, (size_t)len);
}

void log_announce(int fd, enum log_level level, const char *text, const char *msg, const char *fmt,
                  ...)
{
    char pairs[4096], *line;
    size_t len;
    va_list ap;

    if (!log_json) {
        len = strlen(text);
        line = malloc(len + 1);
        if (line == NULL)
            return;
        memcpy(line, text, len);
        line[len++] = '\n';
        write_line(fd, line, len);
        free(line);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(pairs, sizeof(pairs), fmt, ap);
    va_end(ap);
    line = json_line(level, msg, pairs, &len);
    if (line != NULL)
        write_line(fd, line, len);
    free(line);
}

bool log_is_json(void)
{
    return log_json;
}

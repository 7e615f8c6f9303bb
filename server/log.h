/*
 * log.h - one line per event: a lowercase message, then key=value pairs.
 *
 *   log_info("lock lost", "job=%s slot=%lld token=%lld", job, slot, token);
 *
 * Text format (default) writes
 *   2026-11-21T08:00:00.000Z info lock lost job=nightly slot=1763712000000
 * JSON format writes one object per line,
 *   {"ts":"2026-11-21T08:00:00.000Z","level":"info","msg":"lock lost","job":"nightly",
 *    "slot":1763712000000}
 * with the integers of numeric keys (token, slot, count, *_ms, ...; the list
 * is in log.c) as numbers and everything else as strings, so that a key has
 * one JSON type in every line.
 * A value holding spaces must be written quoted, key="a b" (use %s inside the
 * quotes; log_quote() escapes it). The level is checked before anything is
 * formatted. Never log a secret or a webhook body above debug.
 */
#ifndef CF_LOG_H
#define CF_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the level and format; thread-safe to call before threads start. */
void log_setup(enum log_level level, bool json);

/*
 * Sends the log to the file at path (appended, created 0640) instead of
 * standard error, and remembers path for log_reopen(). Call before threads
 * start. Returns CF_OK, or CF_ERR_IO / CF_ERR_NOMEM with a message in err;
 * the log stays where it was then.
 */
int log_open_file(const char *path, char *err, size_t errlen);

/*
 * Reopens the log file by its path (after log rotation moved it), from any
 * thread: lines written meanwhile go to the old or the new file, whole.
 * CF_OK when there is no log file; CF_ERR_IO when it cannot be opened, and
 * the log then goes on to the old file.
 */
int log_reopen(void);

/* Goes back to standard error and forgets the file; for the end of main. */
void log_close(void);

/* Parses "debug", "info", "warn", "error"; returns CF_OK or CF_ERR_INVALID. */
int log_parse_level(const char *name, enum log_level *level);

bool log_enabled(enum log_level level);

/* Writes one event; prefer the macros, which check the level first. */
void log_write(enum log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Writes one line for scripts to read on fd (standard output or error),
 * never to the log file: in text format `text` as it is ("listening on
 * 127.0.0.1:8080"); in JSON format an object of that level with msg and
 * the key=value pairs of fmt, like log_write(), so that every line the
 * process writes in JSON mode is JSON. Not filtered by the level.
 */
void log_announce(int fd, enum log_level level, const char *text, const char *msg, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));
/* True when the format is JSON. */
bool log_is_json(void);
/*
 * Copies s into buf (len bytes) with '"' and '\\' escaped and control
 * characters replaced by spaces, for use inside key="..."; returns buf.
 */
const char *log_quote(const char *s, char *buf, size_t len);

#define log_at(level, msg, ...)                                                                    \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_write(level, msg, __VA_ARGS__);                                                    \
    } while (0)
#define log_debug(msg, ...) log_at(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_at(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_at(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_at(LOG_ERROR, msg, __VA_ARGS__)

#endif

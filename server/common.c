/*
 * common.c - error names, clocks, time formatting and small helpers.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *cf_err_str(int err)
{
    switch (err) {
    case CF_OK:
        return "ok";
    case CF_ERR_NOMEM:
        return "out of memory";
    case CF_ERR_INVALID:
        return "invalid input";
    case CF_ERR_NOT_FOUND:
        return "not found";
    case CF_ERR_CONFLICT:
        return "conflict";
    case CF_ERR_PRECONDITION:
        return "precondition failed";
    case CF_ERR_IO:
        return "i/o error";
    case CF_ERR_DB:
        return "database error";
    case CF_ERR_BUSY:
        return "busy";
    case CF_ERR_FIRED:
        return "already fired";
    case CF_ERR_NO_QUORUM:
        return "no quorum";
    case CF_ERR_TOO_LARGE:
        return "too large";
    case CF_ERR_UNAUTHORIZED:
        return "unauthorized";
    case CF_ERR_FORBIDDEN:
        return "forbidden";
    case CF_ERR_LOST:
        return "lease lost";
    case CF_ERR_TIMEOUT:
        return "timeout";
    case CF_ERR_SHUTDOWN:
        return "shutting down";
    default:
        return "unknown error";
    }
}

static int64_t clock_ms(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cf_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t cf_boot_ms(void)
{
    return clock_ms(CLOCK_BOOTTIME);
}

int64_t cf_boot_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cf_monotonic_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

void cf_monotonic_deadline(int64_t wait_ms, struct timespec *deadline)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += wait_ms / 1000;
    deadline->tv_nsec += (wait_ms % 1000) * 1000000;
    if (deadline->tv_nsec >= 1000000000) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000;
    }
}

void cf_sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    clock_nanosleep(CLOCK_BOOTTIME, 0, &ts, NULL);
}

void cf_civil_from_days(int64_t days, int *year, int *month, int *day)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;

    *year = (int)(yoe + era * 400 + (m <= 2));
    *month = (int)m;
    *day = (int)d;
}

bool cf_is_leap_year(int64_t year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int cf_days_in_month(int64_t year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (month == 2 && cf_is_leap_year(year))
        return 29;
    return days[month - 1];
}

int64_t cf_days_from_civil(int64_t year, int month, int day)
{
    int64_t y = month <= 2 ? year - 1 : year;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

char *cf_format_time(int64_t wall_ms, char out[CF_TIME_LEN])
{
    int64_t secs = wall_ms >= 0 ? wall_ms / 1000 : -((-wall_ms + 999) / 1000);
    int64_t millis = wall_ms - secs * 1000;
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t rem = secs - days * 86400;
    int year, month, day;

    cf_civil_from_days(days, &year, &month, &day);
    /* RFC 3339 has four-digit years; the modulos also bound every field's width. */
    snprintf(out, CF_TIME_LEN, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", (unsigned)year % 10000u,
             (unsigned)month % 100u, (unsigned)day % 100u, (unsigned)(rem / 3600) % 100u,
             (unsigned)(rem % 3600 / 60) % 100u, (unsigned)(rem % 60) % 100u,
             (unsigned)millis % 1000u);
    return out;
}

bool cf_read_digits(const char **p, int n, int *value)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *value = v;
    return true;
}

static int parse_epoch_ms(const char *text, int64_t *wall_ms)
{
    char *end = NULL;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < CF_TIME_MIN_MS || v > CF_TIME_MAX_MS)
        return CF_ERR_INVALID;
    *wall_ms = v;
    return CF_OK;
}

int cf_parse_time(const char *text, int64_t *wall_ms)
{
    const char *p = text;
    int year, month, day, hour, minute, second, millis = 0;
    int64_t offset_s = 0;
    int64_t secs;

    if (text == NULL || *text == '\0')
        return CF_ERR_INVALID;
    if (strchr(text, 'T') == NULL && strchr(text, 't') == NULL && strchr(text, ' ') == NULL)
        return parse_epoch_ms(text, wall_ms);

    if (!cf_read_digits(&p, 4, &year) || *p++ != '-' || !cf_read_digits(&p, 2, &month) ||
        *p++ != '-' || !cf_read_digits(&p, 2, &day))
        return CF_ERR_INVALID;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return CF_ERR_INVALID;
    p++;
    if (!cf_read_digits(&p, 2, &hour) || *p++ != ':' || !cf_read_digits(&p, 2, &minute) ||
        *p++ != ':' || !cf_read_digits(&p, 2, &second))
        return CF_ERR_INVALID;
    if (*p == '.') {
        int scale = 100, digits = 0;

        p++;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                millis += (*p - '0') * scale;
            scale /= 10;
            digits++;
            p++;
        }
        if (digits == 0)
            return CF_ERR_INVALID;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, off_h, off_m;

        p++;
        if (!cf_read_digits(&p, 2, &off_h) || *p++ != ':' || !cf_read_digits(&p, 2, &off_m) ||
            off_h > 23 || off_m > 59)
            return CF_ERR_INVALID;
        offset_s = sign * (off_h * 3600 + off_m * 60);
    } else {
        return CF_ERR_INVALID;
    }
    if (*p != '\0')
        return CF_ERR_INVALID;

    if (month < 1 || month > 12 || day < 1 || day > cf_days_in_month(year, month) || hour > 23 ||
        minute > 59 || second > 60)
        return CF_ERR_INVALID;
    if (second == 60)
        second = 59; /* a leap second reads as the second before it */

    secs = cf_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second -
           offset_s;
    if (secs * 1000 + millis < CF_TIME_MIN_MS || secs * 1000 + millis > CF_TIME_MAX_MS)
        return CF_ERR_INVALID;
    *wall_ms = secs * 1000 + millis;
    return CF_OK;
}

int cf_random_hex(char *out, size_t nbytes)
{
    unsigned char buf[64];

    while (nbytes > 0) {
        size_t n = nbytes < sizeof(buf) ? nbytes : sizeof(buf);

        if (RAND_bytes(buf, (int)n) != 1)
            return CF_ERR_IO;
        cf_hex(buf, n, out);
        out += 2 * n;
        nbytes -= n;
    }
    *out = '\0';
    return CF_OK;
}

void cf_hex(const unsigned char *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * len] = '\0';
}

int cf_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

uint64_t cf_fnv1a(uint64_t hash, const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++)
        hash = (hash ^ *p) * 1099511628211ULL;
    return hash;
}

char *cf_strdup(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

bool cf_secure_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la != lb)
        return false;
    return CRYPTO_memcmp(a, b, la) == 0;
}

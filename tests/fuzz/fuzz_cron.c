/*
 * fuzz_cron.c - libFuzzer target for the cron parser, next-instant search
 * and descriptions (server/cron.c over server/tz.c).
 *
 * The input is a schedule expression. When it parses, a few successive
 * instants are computed in zones with and without DST (including a
 * 30-minute shift and the southern hemisphere), from starting points near
 * DST changes and far away, and the schedule is described into buffers of
 * several sizes. Beyond crashes, leaks and hangs, it checks the contracts
 * every caller relies on: instants strictly increase, fall on whole
 * seconds, and descriptions stay NUL-terminated within their buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cron.h"
#include "tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_BYTES 2048
#define FUZZ_STEPS 4

static const char *const fuzz_zones[] = {"UTC", "Europe/Berlin", "Australia/Lord_Howe",
                                         "America/New_York"};

/* Starting points, ms: the epoch, Berlin's 2026 spring and fall changes, 2100, before 1970. */
static const int64_t fuzz_starts_ms[] = {
    0, 1774746000000 - 90000, 1792890000000 - 3600000, 4102444800000, -86400000,
};

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cron_schedule *schedule = NULL;
    struct cron_error err;
    char expr[FUZZ_MAX_BYTES + 1];
    char text[256];

    /* Expressions are NUL-terminated strings; longer inputs cut to an over-long one. */
    if (size > FUZZ_MAX_BYTES)
        size = FUZZ_MAX_BYTES;
    memcpy(expr, data, size);
    expr[size] = '\0';

    int rc = cron_parse(expr, &schedule, &err);

    if (rc != CF_OK) {
        fuzz_check(rc == CF_ERR_INVALID && schedule == NULL);
        fuzz_check(err.position >= 0 && (size_t)err.position <= strlen(expr));
        fuzz_check(err.message[0] != '\0' && strlen(err.message) < sizeof(err.message));
        return 0;
    }

    for (size_t z = 0; z < sizeof(fuzz_zones) / sizeof(fuzz_zones[0]); z++) {
        const struct tz_zone *zone = tz_get(fuzz_zones[z]);

        if (zone == NULL)
            continue;
        for (size_t s = 0; s < sizeof(fuzz_starts_ms) / sizeof(fuzz_starts_ms[0]); s++) {
            int64_t after_ms = fuzz_starts_ms[s];

            for (int step = 0; step < FUZZ_STEPS; step++) {
                int64_t next_ms = 0;

                rc = cron_next(schedule, zone, after_ms, &next_ms);
                fuzz_check(rc == CF_OK || rc == CF_ERR_NOT_FOUND);
                if (rc != CF_OK)
                    break;
                fuzz_check(next_ms > after_ms && next_ms % 1000 == 0);
                after_ms = next_ms;
            }
        }
    }

    static const size_t sizes[] = {sizeof(text), 17, 1};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        memset(text, 'x', sizeof(text));
        cron_describe(schedule, text, sizes[i]);
        fuzz_check(memchr(text, '\0', sizes[i]) != NULL);
        fuzz_check(sizes[i] != sizeof(text) || text[0] != '\0');
    }
    cron_free(schedule);
    return 0;
}

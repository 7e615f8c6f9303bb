/*
 * metrics: histogram bucketing at the bounds, counters by label, label
 * escaping, and the exact text written.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "metrics.h"

/* Renders metrics into a new string (free it). */
static char *render(struct metrics *metrics)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    cr_assert_not_null(out);
    cr_assert_eq(metrics_write(metrics, out), CF_OK);
    fclose(out);
    return text;
}

static void expect_line(const char *text, const char *line)
{
    char *wanted = NULL;

    cr_assert(asprintf(&wanted, "\n%s\n", line) > 0);
    cr_expect_not_null(strstr(text, wanted), "missing line \"%s\" in:\n%s", line, text);
    free(wanted);
}

Test(metrics, histogram_buckets_hold_their_bound)
{
    struct metrics *metrics;
    char *text;

    cr_assert_eq(metrics_new(&metrics), CF_OK);
    /* 0.25 ms sits in le=0.00025 (bounds are inclusive), 0.2501 ms in the next. */
    metrics_observe(metrics, METRICS_CLAIM_DURATION, 250);
    metrics_observe(metrics, METRICS_CLAIM_DURATION, 251);
    metrics_observe(metrics, METRICS_CLAIM_DURATION, -5);      /* clock oddity: counts as 0 */
    metrics_observe(metrics, METRICS_CLAIM_DURATION, 5000000); /* above the last bound */
    text = render(metrics);
    expect_line(text, "cronfence_claim_duration_seconds_bucket{le=\"0.00025\"} 2");
    expect_line(text, "cronfence_claim_duration_seconds_bucket{le=\"0.0005\"} 3");
    expect_line(text, "cronfence_claim_duration_seconds_bucket{le=\"1\"} 3");
    expect_line(text, "cronfence_claim_duration_seconds_bucket{le=\"+Inf\"} 4");
    expect_line(text, "cronfence_claim_duration_seconds_sum 5.000501");
    expect_line(text, "cronfence_claim_duration_seconds_count 4");
    /* The other histograms are written, empty. */
    expect_line(text, "cronfence_schedule_lag_seconds_bucket{le=\"60\"} 0");
    expect_line(text, "cronfence_webhook_duration_seconds_count 0");
    free(text);
    metrics_free(metrics);
}

Test(metrics, firings_and_slots_by_label)
{
    struct metrics *metrics;
    char *text;

    cr_assert_eq(metrics_new(&metrics), CF_OK);
    metrics_count_firing(metrics, RUN_SUCCEEDED);
    metrics_count_firing(metrics, RUN_SUCCEEDED);
    metrics_count_firing(metrics, RUN_FENCED);
    metrics_count_firing(metrics, RUN_RUNNING); /* not an outcome: ignored */
    metrics_count_slots(metrics, RUN_SKIPPED, METRICS_REASON_OVERLAP, 1);
    metrics_count_slots(metrics, RUN_MISSED, METRICS_REASON_LATE, 40);
    metrics_count_slots(metrics, RUN_MISSED, METRICS_REASON_NO_QUORUM, 2);
    metrics_count_slots(metrics, RUN_MISSED, METRICS_REASON_LATE, 0);
    text = render(metrics);
    expect_line(text, "cronfence_firings_total{outcome=\"succeeded\"} 2");
    expect_line(text, "cronfence_firings_total{outcome=\"fenced\"} 1");
    expect_line(text, "cronfence_firings_total{outcome=\"failed\"} 0");
    expect_line(text, "cronfence_firings_total{outcome=\"lost\"} 0");
    expect_line(text, "cronfence_slots_skipped_total{reason=\"overlap\"} 1");
    expect_line(text, "cronfence_slots_missed_total{reason=\"late\"} 40");
    expect_line(text, "cronfence_slots_missed_total{reason=\"no_quorum\"} 2");
    expect_line(text, "cronfence_slots_missed_total{reason=\"uncommitted\"} 0");
    cr_expect_null(strstr(text, "cronfence_slots_missed_total{reason=\"overlap\"}"));
    cr_expect_null(strstr(text, "cronfence_slots_skipped_total{reason=\"late\"}"));
    free(text);
    metrics_free(metrics);
}

Test(metrics, requests_by_route_method_and_code_sorted)
{
    static const char jobs[] = "/api/v1/jobs";
    char job[] = "/api/v1/jobs/{name}"; /* a different address, the same label */
    struct metrics *metrics;
    char *text, *first, *second;

    cr_assert_eq(metrics_new(&metrics), CF_OK);
    metrics_count_request(metrics, "/api/v1/jobs/{name}", "GET", 200);
    metrics_count_request(metrics, job, "GET", 200);
    metrics_count_request(metrics, jobs, "POST", 201);
    metrics_count_request(metrics, NULL, "BREW", 404);
    metrics_count_request(metrics, NULL, "GET", 1000);
    text = render(metrics);
    expect_line(text, "cronfence_http_requests_total{route=\"/api/v1/jobs/{name}\",method=\"GET\","
                      "code=\"200\"} 2");
    expect_line(
        text,
        "cronfence_http_requests_total{route=\"/api/v1/jobs\",method=\"POST\",code=\"201\"} 1");
    expect_line(text,
                "cronfence_http_requests_total{route=\"none\",method=\"other\",code=\"404\"} 1");
    expect_line(text,
                "cronfence_http_requests_total{route=\"none\",method=\"GET\",code=\"599\"} 1");
    first = strstr(text, "route=\"/api/v1/jobs\"");
    second = strstr(text, "route=\"/api/v1/jobs/{name}\"");
    cr_expect(first != NULL && second != NULL && first < second, "series are sorted by route");
    free(text);
    metrics_free(metrics);
}

Test(metrics, label_values_are_escaped)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    metrics_write_label_value(out, "a\\b\"c\nd");
    fclose(out);
    cr_expect_str_eq(text, "a\\\\b\\\"c\\nd");
    free(text);
}

Test(metrics, null_metrics_are_ignored)
{
    metrics_observe(NULL, METRICS_SCHEDULE_LAG, 1);
    metrics_count_firing(NULL, RUN_SUCCEEDED);
    metrics_count_slots(NULL, RUN_MISSED, METRICS_REASON_LATE, 1);
    metrics_count_request(NULL, "/x", "GET", 200);
    metrics_free(NULL);
}

struct hammer {
    struct metrics *metrics;
    int rounds;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;

    for (int i = 0; i < h->rounds; i++) {
        metrics_observe(h->metrics, METRICS_WEBHOOK_DURATION, i % 100000);
        metrics_count_request(h->metrics, "/api/v1/runs", "GET", 200 + i % 3);
    }
    return NULL;
}

Test(metrics, concurrent_updates_are_all_counted)
{
    struct metrics *metrics;
    struct hammer h;
    pthread_t threads[4];
    char *text;

    cr_assert_eq(metrics_new(&metrics), CF_OK);
    h.metrics = metrics;
    h.rounds = 30000;
    for (int t = 0; t < 4; t++)
        cr_assert_eq(pthread_create(&threads[t], NULL, hammer_main, &h), 0);
    for (int t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);
    text = render(metrics);
    expect_line(text, "cronfence_webhook_duration_seconds_count 120000");
    expect_line(text,
                "cronfence_http_requests_total{route=\"/api/v1/runs\",method=\"GET\",code=\"200\"} "
                "40000");
    free(text);
    metrics_free(metrics);
}

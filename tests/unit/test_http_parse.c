/*
 * test_http_parse.c - the edge's own parsing and guards: request targets
 * and Host values (tables in tests/data/http), Content-Length, capped
 * bodies, address keys, the connection guard and the failed-token limit.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authlimit.h"
#include "common.h"
#include "connguard.h"
#include "http_parse.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* Decodes a table column: "-" is empty, "\0" a NUL byte. Returns the length. */
static size_t column(const char *text, char *out)
{
    size_t n = 0;

    if (strcmp(text, "-") == 0)
        return 0;
    for (size_t i = 0; text[i] != '\0'; i++) {
        if (text[i] == '\\' && text[i + 1] == '0') {
            out[n++] = '\0';
            i++;
        } else {
            out[n++] = text[i];
        }
    }
    return n;
}

/* Splits line at tabs into at most max fields; returns how many. */
static int split(char *line, char **fields, int max)
{
    int count = 0;

    line[strcspn(line, "\n")] = '\0';
    while (count < max) {
        fields[count++] = line;
        line = strchr(line, '\t');
        if (line == NULL)
            break;
        *line++ = '\0';
    }
    return count;
}

Test(http_parse, targets_from_table)
{
    FILE *file = fopen(CF_TEST_DATA "/http/targets.txt", "r");
    char line[1024];
    int cases = 0;

    cr_assert_not_null(file);
    while (fgets(line, sizeof(line), file) != NULL) {
        char *f[8], expect[256];
        struct http_target target;
        size_t len;
        int n;

        if (line[0] == '#' || line[0] == '\n')
            continue;
        n = split(line, f, 8);
        cr_assert(n == 4 || n == 7, "bad table line %s", f[0]);
        cr_assert_eq(http_target_parse(f[0], strlen(f[0]), &target), CF_OK);
        len = column(f[1], expect);
        cr_expect(target.path_len == len && memcmp(target.path, expect, len) == 0, "%s: path %s",
                  f[0], target.path);
        cr_expect_eq(http_target_path_has_nul(&target), atoi(f[2]) == 1, "%s: path NUL", f[0]);
        cr_expect_eq(target.param_count, (size_t)atoi(f[3]), "%s: %zu parameters", f[0],
                     target.param_count);
        if (n == 7 && target.param_count > 0) {
            const struct http_param *param = &target.params[0];

            len = column(f[4], expect);
            cr_expect(param->key_len == len && memcmp(param->key, expect, len) == 0, "%s: key",
                      f[0]);
            len = column(f[5], expect);
            cr_expect(param->value_len == len && memcmp(param->value, expect, len) == 0,
                      "%s: value %s", f[0], param->value);
            cr_expect_eq(http_param_has_nul(param), atoi(f[6]) == 1, "%s: parameter NUL", f[0]);
        }
        http_target_release(&target);
        cases++;
    }
    fclose(file);
    cr_expect_geq(cases, 20);
}

Test(http_parse, lookup_finds_the_first_of_a_key)
{
    struct http_target target;
    const char raw[] = "/p?a=1&b=2&a=3";

    cr_assert_eq(http_target_parse(raw, strlen(raw), &target), CF_OK);
    cr_expect_str_eq(http_target_param(&target, "a")->value, "1");
    cr_expect_str_eq(http_target_param(&target, "b")->value, "2");
    cr_expect_null(http_target_param(&target, "c"));
    http_target_release(&target);
}

Test(http_parse, hosts_from_table)
{
    FILE *file = fopen(CF_TEST_DATA "/http/hosts.txt", "r");
    char line[256];
    int cases = 0;

    cr_assert_not_null(file);
    while (fgets(line, sizeof(line), file) != NULL) {
        char *f[2];
        const char *host;

        if (line[0] == '#' || line[0] == '\n')
            continue;
        cr_assert_eq(split(line, f, 2), 2, "bad table line %s", f[0]);
        host = strcmp(f[0], "<none>") == 0 ? NULL : strcmp(f[0], "<empty>") == 0 ? "" : f[0];
        cr_expect_eq(http_host_header_is_loopback(host), atoi(f[1]) == 1, "Host \"%s\"", f[0]);
        cases++;
    }
    fclose(file);
    cr_expect_geq(cases, 25);
}

Test(http_parse, content_length)
{
    static const char *const bad[] = {"",   "-1",   "+5",  " 5",
                                      "5 ", "0x10", "1e3", "99999999999999999999"};
    uint64_t length = 7;

    cr_expect_eq(http_parse_content_length("0", &length), CF_OK);
    cr_expect_eq(length, 0);
    cr_expect_eq(http_parse_content_length("1048576", &length), CF_OK);
    cr_expect_eq(length, 1048576);
    cr_expect_eq(http_parse_content_length("9007199254740992", &length), CF_OK);
    for (size_t i = 0; i < COUNT(bad); i++)
        cr_expect_eq(http_parse_content_length(bad[i], &length), CF_ERR_INVALID, "\"%s\"", bad[i]);
    cr_expect_eq(http_parse_content_length(NULL, &length), CF_ERR_INVALID);
}

Test(http_parse, body_never_outgrows_its_declared_length_or_limit)
{
    struct http_body body;
    char chunk[3000];

    memset(chunk, 'x', sizeof(chunk));
    /* Declared: one allocation of exactly that much. */
    cr_assert_eq(http_body_begin(&body, 10, 1024), CF_OK);
    cr_expect_eq(http_body_append(&body, chunk, 4), CF_OK);
    cr_expect_eq(body.cap, 11);
    cr_expect_eq(http_body_append(&body, chunk, 6), CF_OK);
    cr_expect_eq(body.cap, 11);
    cr_expect_str_eq(body.data, "xxxxxxxxxx");
    cr_expect_eq(http_body_append(&body, chunk, 1), CF_ERR_TOO_LARGE);
    cr_expect_eq(body.len, 10);
    http_body_release(&body);
    /* Over the limit before a byte is read. */
    cr_expect_eq(http_body_begin(&body, 1025, 1024), CF_ERR_TOO_LARGE);
    cr_expect_null(body.data);
    /* Unknown length: doubling, but never past limit + 1. */
    cr_assert_eq(http_body_begin(&body, -1, 5000), CF_OK);
    cr_expect_eq(http_body_append(&body, chunk, 3000), CF_OK);
    cr_expect_eq(body.cap, 4096);
    cr_expect_eq(http_body_append(&body, chunk, 2000), CF_OK);
    cr_expect_eq(body.cap, 5001);
    cr_expect_eq(http_body_append(&body, chunk, 1), CF_ERR_TOO_LARGE);
    cr_expect_eq(body.len, 5000);
    http_body_release(&body);
}

Test(http_parse, address_keys)
{
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    struct sockaddr unix_addr = {.sa_family = AF_UNIX};
    char key[HTTP_ADDRESS_KEY_LEN];

    inet_pton(AF_INET, "192.0.2.7", &in4.sin_addr);
    cr_expect_str_eq(http_address_key((struct sockaddr *)&in4, key), "192.0.2.7");
    inet_pton(AF_INET6, "2001:db8:1:2:3:4:5:6", &in6.sin6_addr);
    cr_expect_str_eq(http_address_key((struct sockaddr *)&in6, key), "2001:db8:1:2::/64");
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr);
    cr_expect_str_eq(http_address_key((struct sockaddr *)&in6, key), "192.0.2.7");
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    cr_expect_str_eq(http_address_key((struct sockaddr *)&in6, key), "::1");
    cr_expect_str_eq(http_address_key(&unix_addr, key), "unknown");
    cr_expect_str_eq(http_address_key(NULL, key), "unknown");
}

/* ---------------------------------------------------------------------------
 * The connection guard, on socket pairs
 */

/* Whether the peer of a guarded socket sees its end (the guard shut it down). */
static bool peer_closed(int peer)
{
    char byte;

    return recv(peer, &byte, 1, MSG_DONTWAIT) == 0;
}

Test(connguard, drops_the_oldest_waiting_connection_of_an_address)
{
    struct sockaddr_in a = {.sin_family = AF_INET}, b = {.sin_family = AF_INET};
    struct connguard *guard;
    struct connguard_conn *conns[4];
    int pairs[4][2];

    inet_pton(AF_INET, "192.0.2.1", &a.sin_addr);
    inet_pton(AF_INET, "192.0.2.2", &b.sin_addr);
    cr_assert_eq(connguard_new(10000, 2, false, &guard), CF_OK);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]), 0);
    conns[0] = connguard_open(guard, pairs[0][0], (struct sockaddr *)&a, 100);
    conns[1] = connguard_open(guard, pairs[1][0], (struct sockaddr *)&a, 200);
    /* Another address does not count against a. */
    conns[2] = connguard_open(guard, pairs[2][0], (struct sockaddr *)&b, 250);
    cr_expect_not(peer_closed(pairs[0][1]));
    /* Done with its headers, a connection no longer waits: 1 is not the oldest waiter then. */
    connguard_headers_done(guard, conns[1]);
    conns[3] = connguard_open(guard, pairs[3][0], (struct sockaddr *)&a, 300);
    cr_expect_not(peer_closed(pairs[0][1]));
    cr_expect_eq(connguard_waiting(guard), 3);
    connguard_request_done(guard, conns[1], 400);
    /* A fifth from a: three waiting before it, so the two oldest, 0 and 3, go. */
    int extra[2];

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, extra), 0);
    struct connguard_conn *fifth = connguard_open(guard, extra[0], (struct sockaddr *)&a, 500);

    cr_expect(peer_closed(pairs[0][1]));
    cr_expect_not(peer_closed(pairs[1][1]));
    cr_expect_not(peer_closed(pairs[2][1]));
    cr_expect(peer_closed(pairs[3][1]));
    cr_expect_eq(connguard_shut_count(guard), 2);
    connguard_close(guard, fifth);
    for (int i = 0; i < 4; i++) {
        connguard_close(guard, conns[i]);
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    close(extra[0]);
    close(extra[1]);
    connguard_free(guard);
}

Test(connguard, sweep_drops_connections_past_the_header_deadline)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    struct connguard *guard;
    struct connguard_conn *slow, *done;
    int one[2], two[2];

    inet_pton(AF_INET, "192.0.2.1", &a.sin_addr);
    cr_assert_eq(connguard_new(10000, 32, false, &guard), CF_OK);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, one), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, two), 0);
    slow = connguard_open(guard, one[0], (struct sockaddr *)&a, 1000);
    done = connguard_open(guard, two[0], (struct sockaddr *)&a, 1000);
    connguard_headers_done(guard, done);
    cr_expect_eq(connguard_sweep(guard, 10999), 0);
    cr_expect_not(peer_closed(one[1]));
    cr_expect_eq(connguard_sweep(guard, 11000), 1);
    cr_expect(peer_closed(one[1]));
    cr_expect_not(peer_closed(two[1]));
    /* After its answer, the kept connection waits again, from then. */
    connguard_request_done(guard, done, 20000);
    cr_expect_eq(connguard_sweep(guard, 29999), 0);
    cr_expect_eq(connguard_sweep(guard, 30000), 1);
    cr_expect(peer_closed(two[1]));
    connguard_close(guard, slow);
    connguard_close(guard, done);
    close(one[0]);
    close(one[1]);
    close(two[0]);
    close(two[1]);
    connguard_free(guard);
}

Test(connguard, a_reused_descriptor_is_not_touched)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    struct connguard *guard;
    struct connguard_conn *conn;
    int first[2], second[2];

    inet_pton(AF_INET, "192.0.2.1", &a.sin_addr);
    cr_assert_eq(connguard_new(10, 32, false, &guard), CF_OK);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, first), 0);
    conn = connguard_open(guard, first[0], (struct sockaddr *)&a, 0);
    /* The descriptor number now names another socket. */
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, second), 0);
    cr_assert_eq(dup2(second[0], first[0]), first[0]);
    cr_expect_eq(connguard_sweep(guard, 100), 1);
    cr_expect_not(peer_closed(second[1]));
    connguard_close(guard, conn);
    close(first[0]);
    close(first[1]);
    close(second[0]);
    close(second[1]);
    connguard_free(guard);
}

/* ---------------------------------------------------------------------------
 * Failed tokens per address
 */

Test(authlimit, burst_then_refill)
{
    struct authlimit *limit;
    unsigned retry_after_s = 0;
    int exhausted = 0;

    cr_assert_eq(authlimit_new(3, 2000, &limit), CF_OK);
    cr_expect(authlimit_allowed(limit, "192.0.2.1", 0, NULL));
    for (int i = 0; i < 3; i++)
        exhausted += authlimit_failed(limit, "192.0.2.1", 0);
    cr_expect_eq(exhausted, 1, "the failure that spends the budget is reported once");
    cr_expect_not(authlimit_allowed(limit, "192.0.2.1", 0, &retry_after_s));
    cr_expect_eq(retry_after_s, 2);
    /* Other addresses are not affected. */
    cr_expect(authlimit_allowed(limit, "192.0.2.2", 0, NULL));
    /* One failure's worth comes back every 2 s. */
    cr_expect_not(authlimit_allowed(limit, "192.0.2.1", 1999, NULL));
    cr_expect(authlimit_allowed(limit, "192.0.2.1", 2000, NULL));
    cr_expect(authlimit_failed(limit, "192.0.2.1", 2000));
    cr_expect_not(authlimit_allowed(limit, "192.0.2.1", 2000, NULL));
    cr_expect(authlimit_allowed(limit, "192.0.2.1", 10000, NULL));
    authlimit_free(limit);
}

Test(authlimit, memory_is_bounded_and_active_offenders_stay)
{
    struct authlimit *limit;
    char key[32];

    cr_assert_eq(authlimit_new(2, 60000, &limit), CF_OK);
    authlimit_failed(limit, "198.51.100.1", 0);
    authlimit_failed(limit, "198.51.100.1", 0);
    cr_expect_not(authlimit_allowed(limit, "198.51.100.1", 0, NULL));
    /* Many addresses failing once each: the table keeps its size, and the blocked one,
     * whose budget is the most spent of its set, is not the one reused. */
    for (int i = 0; i < 7 * AUTHLIMIT_SLOTS; i++) {
        snprintf(key, sizeof(key), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        authlimit_failed(limit, key, 1);
    }
    cr_expect_not(authlimit_allowed(limit, "198.51.100.1", 2, NULL));
    authlimit_free(limit);
}

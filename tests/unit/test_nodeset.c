/*
 * test_nodeset.c - Redis node URLs (redis:// or rediss://
 * [[user]:password@]host[:port][/db]).
 * Connections and rounds are exercised against real redis-server processes
 * by the integration tests.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "common.h"
#include "nodeset.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

struct good_case {
    const char *text;
    bool tls;
    const char *host;
    int port;
    const char *user;
    const char *password;
    int db;
};

static const struct good_case good[] = {
    {"redis://127.0.0.1:6379", false, "127.0.0.1", 6379, "", "", 0},
    {"redis://a.example:7000/3", false, "a.example", 7000, "", "", 3},
    {"redis://localhost", false, "localhost", 6379, "", "", 0},
    {"redis://localhost/", false, "localhost", 6379, "", "", 0},
    {"redis://:s3cret@lock-a:6380", false, "lock-a", 6380, "", "s3cret", 0},
    {"redis://cron:pa:ss@lock-b:6381/15", false, "lock-b", 6381, "cron", "pa:ss", 15},
    {"redis://:p@ss@h:1", false, "h", 1, "", "p@ss", 0},
    {"redis://[::1]:6379", false, "::1", 6379, "", "", 0},
    {"redis://[fe80::1]", false, "fe80::1", 6379, "", "", 0},
    {"redis://h:65535", false, "h", 65535, "", "", 0},
    {"rediss://127.0.0.1:6380", true, "127.0.0.1", 6380, "", "", 0},
    {"rediss://cron:pw@lock.example:6380/2", true, "lock.example", 6380, "cron", "pw", 2},
    {"rediss://[::1]", true, "::1", 6379, "", "", 0},
};

Test(nodeset, parses_good_urls)
{
    for (size_t i = 0; i < COUNT(good); i++) {
        struct nodeset_url url;
        char err[256] = "";

        cr_assert_eq(nodeset_parse_url(good[i].text, &url, err, sizeof(err)), CF_OK, "%s: %s",
                     good[i].text, err);
        cr_expect_eq(url.tls, good[i].tls, "%s", good[i].text);
        cr_expect_str_eq(url.host, good[i].host, "%s", good[i].text);
        cr_expect_eq(url.port, good[i].port, "%s", good[i].text);
        cr_expect_str_eq(url.user, good[i].user, "%s", good[i].text);
        cr_expect_str_eq(url.password, good[i].password, "%s", good[i].text);
        cr_expect_eq(url.db, good[i].db, "%s", good[i].text);
    }
}

struct bad_case {
    const char *text;
    const char *reason; /* a part of the message */
};

static const struct bad_case bad[] = {
    {"127.0.0.1:6379", "expected redis://"},
    {"redisss://h:1", "expected redis://"},
    {"REDISS://h:1", "expected redis://"},
    {"rediss:/h:1", "expected redis://"},
    {"rediss://", "missing host"},
    {"rediss://h:1?tls=1", "query"},
    {"rediss://secret@h:1", "credentials"},
    {"http://h:1", "expected redis://"},
    {"redis://", "missing host"},
    {"redis://:6379", "missing host"},
    {"redis://h:0", "port"},
    {"redis://h:65536", "port"},
    {"redis://h:port", "port"},
    {"redis://h:", "port"},
    {"redis://h:1/db", "database"},
    {"redis://h:1/-1", "database"},
    {"redis://h:1?timeout=5", "query"},
    {"redis://secret@h:1", "credentials"},
    {"redis://[::1:6379", "unclosed"},
    {"redis://[::1]x:6379", "after ]"},
};

Test(nodeset, refuses_bad_urls)
{
    for (size_t i = 0; i < COUNT(bad); i++) {
        struct nodeset_url url;
        char err[256] = "";

        cr_expect_eq(nodeset_parse_url(bad[i].text, &url, err, sizeof(err)), CF_ERR_INVALID, "%s",
                     bad[i].text);
        cr_expect(strstr(err, bad[i].reason) != NULL, "%s: message \"%s\" lacks \"%s\"",
                  bad[i].text, err, bad[i].reason);
        if (strchr(bad[i].text, '@') == NULL)
            cr_expect(strstr(err, bad[i].text) != NULL, "%s: message does not name the URL",
                      bad[i].text);
        else /* the message is logged: credentials masked */
            cr_expect(strstr(err, "://***@") != NULL && strstr(err, "secret") == NULL,
                      "%s: message \"%s\" shows the credentials", bad[i].text, err);
    }
}

Test(nodeset, quorum_is_a_majority_of_the_configured_nodes)
{
    static const struct {
        const char *urls;
        size_t size, quorum;
    } cases[] = {
        {"redis://a", 1, 1},
        {"redis://a,redis://b", 2, 2},
        {"redis://a,redis://b,redis://c", 3, 2},
        {"redis://a, redis://b,redis://c,redis://d", 4, 3},
        {"redis://a,redis://b,redis://c,redis://d,redis://e", 5, 3},
    };

    for (size_t i = 0; i < COUNT(cases); i++) {
        struct nodeset_config cfg = {.urls = cases[i].urls, .timeout_ms = 50};
        struct nodeset *ns = NULL;
        char err[256];

        cr_assert_eq(nodeset_new(&cfg, &ns, err, sizeof(err)), CF_OK, "%s: %s", cases[i].urls, err);
        cr_expect_eq(nodeset_size(ns), cases[i].size);
        cr_expect_eq(nodeset_quorum(ns), cases[i].quorum, "%s", cases[i].urls);
        nodeset_free(ns);
    }
}

Test(nodeset, refuses_a_node_listed_twice)
{
    struct nodeset_config cfg = {.urls = "redis://a:1,redis://b:1,redis://a:1", .timeout_ms = 50};
    struct nodeset *ns = NULL;
    char err[256] = "";

    cr_expect_eq(nodeset_new(&cfg, &ns, err, sizeof(err)), CF_ERR_INVALID);
    cr_expect_null(ns);
    cr_expect(strstr(err, "listed twice") != NULL, "%s", err);
}

Test(nodeset, refuses_two_databases_of_one_server)
{
    struct nodeset_config cfg = {.urls = "redis://a:1/0,redis://b:1,redis://a:1/2",
                                 .timeout_ms = 50};
    struct nodeset *ns = NULL;
    char err[256] = "";

    cr_expect_eq(nodeset_new(&cfg, &ns, err, sizeof(err)), CF_ERR_INVALID);
    cr_expect_null(ns);
    cr_expect(strstr(err, "listed twice") != NULL, "%s", err);
}

Test(nodeset, errors_do_not_show_the_password)
{
    struct nodeset_url url;
    char err[256] = "";

    cr_expect_eq(nodeset_parse_url("redis://:hunter2@host:x", &url, err, sizeof(err)),
                 CF_ERR_INVALID);
    cr_expect(strstr(err, "hunter2") == NULL, "%s", err);
    cr_expect(strstr(err, "redis://***@host:x") != NULL, "%s", err);
}

Test(nodeset, a_ca_bundle_needs_a_rediss_node)
{
    struct nodeset_config cfg = {
        .urls = "redis://a:1,redis://b:1", .timeout_ms = 50, .tls_ca = "ca.pem"};
    struct nodeset *ns = NULL;
    char err[256] = "";

    cr_expect_eq(nodeset_new(&cfg, &ns, err, sizeof(err)), CF_ERR_INVALID);
    cr_expect_null(ns);
    cr_expect(strstr(err, "no lock node is rediss://") != NULL, "%s", err);
}

Test(nodeset, an_unreadable_ca_bundle_is_named)
{
    struct nodeset_config cfg = {
        .urls = "redis://a:1,rediss://b:1", .timeout_ms = 50, .tls_ca = "/nonexistent/ca.pem"};
    struct nodeset *ns = NULL;
    char err[256] = "";

    cr_expect_eq(nodeset_new(&cfg, &ns, err, sizeof(err)), CF_ERR_INVALID);
    cr_expect_null(ns);
    cr_expect(strstr(err, "cannot read --redis-ca /nonexistent/ca.pem") != NULL, "%s", err);
}

Test(nodeset, rediss_nodes_use_the_system_cas_by_default)
{
    struct nodeset_config cfg = {.urls = "rediss://a:1,rediss://b:1,redis://c:1", .timeout_ms = 50};
    struct nodeset *ns = NULL;
    char err[256] = "";

    cr_expect_eq(nodeset_new(&cfg, &ns, err, sizeof(err)), CF_OK, "%s", err);
    cr_expect_eq(nodeset_size(ns), 3);
    nodeset_free(ns);
}

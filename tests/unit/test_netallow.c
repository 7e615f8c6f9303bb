/*
 * test_netallow.c - the webhook allow list: parsing, host checks before
 * resolution and address checks at connect time.
 *
 * Parameters are copied into another process by Criterion, so the case
 * tables hold text, never pointers.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "netallow.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* Parses list or fails the test. */
static struct netallow *parse_ok(const char *list)
{
    struct netallow *allow = NULL;
    char errbuf[256] = "";

    cr_assert_eq(netallow_parse(list, &allow, errbuf, sizeof(errbuf)), CF_OK,
                 "netallow_parse(\"%s\"): %s", list, errbuf);
    cr_assert_not_null(allow);
    return allow;
}

/* ---------------------------------------------------------------------------
 * Parsing
 */

struct list_case {
    char list[96];
};

static const struct list_case valid_lists[] = {
    {""},
    {"hooks.example.com"},
    {"HOOKS.Example.COM."},
    {"a_b.internal"},
    {"localhost"},
    {"10.0.0.0/8"},
    {"10.1.2.3/8"}, /* host bits are ignored */
    {"192.168.1.1"},
    {"0.0.0.0/0"},
    {"::/0"},
    {"::1/128"},
    {"[::1]/128"},
    {"[2001:db8::1]"},
    {"fe80::/10"},
    {"169.254.169.254/32"},
    {"::ffff:10.0.0.0/104"},
    {" hooks.example.com , 10.0.0.0/8 ,, ::1 ,"},
    {"10.0.0.0/08"},
};

ParameterizedTestParameters(netallow, parse_valid)
{
    return cr_make_param_array(struct list_case, (struct list_case *)valid_lists,
                               COUNT(valid_lists));
}

ParameterizedTest(const struct list_case *c, netallow, parse_valid)
{
    netallow_free(parse_ok(c->list));
}

struct bad_list_case {
    char list[96];
    char entry[64]; /* what the message must quote */
    char reason[32];
};

static const struct bad_list_case invalid_lists[] = {
    {"10.0.0.0/33", "10.0.0.0/33", "bad prefix length"},
    {"::/129", "::/129", "bad prefix length"},
    {"10.0.0.0/", "10.0.0.0/", "bad prefix length"},
    {"10.0.0.0/8x", "10.0.0.0/8x", "bad prefix length"},
    {"10.0.0.0/-1", "10.0.0.0/-1", "bad prefix length"},
    {"10.0.0.0/0008", "10.0.0.0/0008", "bad prefix length"},
    {"10.0.0.0/ 8", "10.0.0.0/ 8", "bad prefix length"},
    {"hooks.example.com/8", "hooks.example.com/8", "invalid"},
    {"10.0.0.256", "10.0.0.256", "invalid"},
    {"1.2.3", "1.2.3", "invalid"},
    {"10.0.0.0.0/8", "10.0.0.0.0/8", "invalid"},
    {"http://hooks.example.com", "http://hooks.example.com", "invalid"},
    {"foo bar", "foo bar", "invalid"},
    {"a..b", "a..b", "invalid"},
    {"*.example.com", "*.example.com", "invalid"},
    {"[::1", "[::1", "invalid"},
    {"::1::2", "::1::2", "invalid"},
    {"fe80::1%eth0", "fe80::1%eth0", "invalid"},
    {".", ".", "invalid"},
    {"ok.example.com,10.0.0.0/99", "10.0.0.0/99", "bad prefix length"},
};

ParameterizedTestParameters(netallow, parse_invalid)
{
    return cr_make_param_array(struct bad_list_case, (struct bad_list_case *)invalid_lists,
                               COUNT(invalid_lists));
}

ParameterizedTest(const struct bad_list_case *c, netallow, parse_invalid)
{
    struct netallow *allow = (struct netallow *)1; /* must come back NULL */
    char errbuf[256] = "";
    char quoted[80];

    cr_assert_eq(netallow_parse(c->list, &allow, errbuf, sizeof(errbuf)), CF_ERR_INVALID,
                 "netallow_parse(\"%s\") accepted it", c->list);
    cr_expect_null(allow);
    snprintf(quoted, sizeof(quoted), "\"%s\"", c->entry);
    cr_expect(strstr(errbuf, quoted) != NULL, "message \"%s\" does not name %s", errbuf, quoted);
    cr_expect(strstr(errbuf, c->reason) != NULL, "message \"%s\" does not say %s", errbuf,
              c->reason);
}

Test(netallow, parse_null_is_empty)
{
    struct netallow *allow = NULL;
    char errbuf[16];

    cr_assert_eq(netallow_parse(NULL, &allow, errbuf, sizeof(errbuf)), CF_OK);
    cr_expect(netallow_host_allowed(allow, "anything.example"));
    netallow_free(allow);
    netallow_free(NULL);
}

Test(netallow, message_fits_small_buffer)
{
    struct netallow *allow = NULL;
    char errbuf[8];

    cr_assert_eq(netallow_parse("bad entry", &allow, errbuf, sizeof(errbuf)), CF_ERR_INVALID);
    cr_expect_eq(strlen(errbuf), sizeof(errbuf) - 1);
}

/* ---------------------------------------------------------------------------
 * Hosts, before resolution
 */

struct host_case {
    char list[96];
    char host[64];
    bool allowed;
};

static const struct host_case host_cases[] = {
    /* The empty list: everything but link-local. */
    {"", "hooks.example.com", true},
    {"", "localhost", true},
    {"", "127.0.0.1", true},
    {"", "10.0.0.1", true},
    {"", "::1", true},
    {"", "[::1]", true},
    {"", "169.254.169.254", false},
    {"", "169.254.0.0", false},
    {"", "169.253.255.255", true},
    {"", "169.255.0.0", true},
    {"", "169.254.169.254.", false},
    {"", "2852039166", false},          /* 169.254.169.254 as one number */
    {"", "0xa9.0xfe.0xa9.0xfe", false}, /* and in hex */
    {"", "fe80::1", false},
    {"", "[fe80::1]", false},
    {"", "fe80::1%eth0", false},
    {"", "FE80::1", false},
    {"", "febf:ffff::1", false},
    {"", "fec0::1", true},
    {"", "::ffff:169.254.169.254", false},
    {"", "[::ffff:a9fe:a9fe]", false},
    {"", "::ffff:10.0.0.1", true},
    {"", "", false},
    {"", "[]", false},
    {"", "a:b", false},
    /* A non-empty list: only what it names. */
    {"hooks.example.com,10.0.0.0/8", "hooks.example.com", true},
    {"hooks.example.com,10.0.0.0/8", "HOOKS.EXAMPLE.COM", true},
    {"hooks.example.com,10.0.0.0/8", "hooks.example.com.", true},
    {"hooks.example.com,10.0.0.0/8", "other.example.com", false},
    {"hooks.example.com,10.0.0.0/8", "example.com", false},
    {"hooks.example.com,10.0.0.0/8", "10.255.0.1", true},
    {"hooks.example.com,10.0.0.0/8", "::ffff:10.255.0.1", true},
    {"hooks.example.com,10.0.0.0/8", "11.0.0.1", false},
    {"hooks.example.com,10.0.0.0/8", "127.0.0.1", false},
    {"hooks.example.com,10.0.0.0/8", "169.254.169.254", false},
    {"HOOKS.example.com.", "hooks.EXAMPLE.com", true},
    {"::1", "::1", true},
    {"::1", "[::1]", true},
    {"::1", "::2", false},
    {"2001:db8::/32", "2001:db8:ffff::1", true},
    {"2001:db8::/32", "2001:db9::1", false},
    {"::ffff:10.0.0.0/104", "10.1.2.3", true},
    {"192.168.1.1", "192.168.1.1", true},
    {"192.168.1.1", "192.168.1.2", false},
    /* Link-local only when a listed CIDR contains it; a name is not enough. */
    {"169.254.0.0/16", "169.254.169.254", true},
    {"169.254.169.254", "169.254.169.254", true},
    {"169.254.169.254", "169.254.169.253", false},
    {"169.254.169.254", "::ffff:169.254.169.254", true},
    {"fe80::/10", "fe80::1", true},
    {"fe80::/10", "169.254.1.1", false},
    {"hooks.example.com", "169.254.1.1", false},
    /* A catch-all does not open protected addresses: they must be listed as such. */
    {"0.0.0.0/0", "169.254.1.1", false},
    {"0.0.0.0/0", "169.254.169.254", false},
    {"0.0.0.0/0", "10.0.0.1", true},
    {"::/0", "169.254.169.254", false},
    {"::/0", "::ffff:169.254.169.254", false},
    {"::/0", "fe80::1", false},
    {"::/0", "2001:db8::1", true},
    {"169.0.0.0/8", "169.254.169.254", false},
    /* Cloud metadata addresses outside link-local. */
    {"", "fd00:ec2::254", false},
    {"", "[fd00:ec2::254]", false},
    {"", "fd00:ec2::253", true},
    {"fd00::/8", "fd00:ec2::254", false},
    {"fd00::/8", "fd00:ec2::253", true},
    {"fd00:ec2::254", "fd00:ec2::254", true},
    {"", "100.100.100.200", false},
    {"", "100.100.100.201", true},
    {"100.64.0.0/10", "100.100.100.200", false},
    {"0.0.0.0/0", "100.100.100.200", false},
    {"100.100.100.200/32", "100.100.100.200", true},
    {"", "metadata.google.internal", false},
    {"", "METADATA.google.internal.", false},
    {"", "metadata.goog", false},
    {"metadata.google.internal", "metadata.google.internal", true},
    {"0.0.0.0/0", "metadata.google.internal", false},
};

ParameterizedTestParameters(netallow, host_allowed)
{
    return cr_make_param_array(struct host_case, (struct host_case *)host_cases, COUNT(host_cases));
}

ParameterizedTest(const struct host_case *c, netallow, host_allowed)
{
    struct netallow *allow = parse_ok(c->list);

    cr_expect_eq(netallow_host_allowed(allow, c->host), c->allowed,
                 "list \"%s\", host \"%s\": expected %s", c->list, c->host,
                 c->allowed ? "allowed" : "refused");
    netallow_free(allow);
}

Test(netallow, null_list_and_host)
{
    cr_expect(netallow_host_allowed(NULL, "hooks.example.com"));
    cr_expect_not(netallow_host_allowed(NULL, "169.254.169.254"));
    cr_expect_not(netallow_host_allowed(NULL, NULL));
    cr_expect_not(netallow_names_host(NULL, "hooks.example.com"));
}

Test(netallow, names_host)
{
    struct netallow *allow = parse_ok("Hooks.Example.com,10.0.0.0/8,192.168.1.1");

    cr_expect(netallow_names_host(allow, "hooks.example.com"));
    cr_expect(netallow_names_host(allow, "HOOKS.EXAMPLE.COM."));
    cr_expect_not(netallow_names_host(allow, "example.com"));
    /* Addresses are CIDRs, not names. */
    cr_expect_not(netallow_names_host(allow, "192.168.1.1"));
    cr_expect_not(netallow_names_host(allow, NULL));
    netallow_free(allow);
}

/* ---------------------------------------------------------------------------
 * Addresses, at connect time
 */

struct address_case {
    char list[96];
    char address[48];
    bool host_listed;
    bool allowed;
};

static const struct address_case address_cases[] = {
    {"", "93.184.216.34", false, true},
    {"", "127.0.0.1", false, true},
    {"", "2001:db8::1", false, true},
    {"", "169.254.169.254", false, false},
    {"", "fe80::1", false, false},
    {"", "::ffff:169.254.169.254", false, false},
    {"", "169.254.169.254", true, false},
    {"hooks.example.com", "93.184.216.34", true, true},
    {"hooks.example.com", "93.184.216.34", false, false},
    /* A listed name resolving to link-local is refused. */
    {"hooks.example.com", "169.254.169.254", true, false},
    {"hooks.example.com", "fe80::1", true, false},
    {"hooks.example.com", "::ffff:169.254.169.254", true, false},
    {"10.0.0.0/8", "10.9.8.7", false, true},
    {"10.0.0.0/8", "::ffff:10.9.8.7", false, true},
    {"10.0.0.0/8", "11.0.0.1", false, false},
    {"169.254.169.254/32", "169.254.169.254", false, true},
    {"169.254.169.254/32", "169.254.169.254", true, true},
    {"fe80::/64", "fe80::1", false, true},
    {"fe80::/64", "fe80:0:0:1::1", false, false},
    {"0.0.0.0/0", "169.254.169.254", false, false},
    {"::/0", "fe80::1", false, false},
    {"::/0", "fd00:ec2::254", false, false},
    {"0.0.0.0/0", "100.100.100.200", false, false},
    {"0.0.0.0/0", "100.100.100.200", true, false},
    {"100.100.100.200", "100.100.100.200", false, true},
    {"fd00:ec2::254/128", "fd00:ec2::254", false, true},
};

ParameterizedTestParameters(netallow, address_allowed)
{
    return cr_make_param_array(struct address_case, (struct address_case *)address_cases,
                               COUNT(address_cases));
}

ParameterizedTest(const struct address_case *c, netallow, address_allowed)
{
    struct netallow *allow = parse_ok(c->list);
    struct sockaddr_storage storage;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;

    memset(&storage, 0, sizeof(storage));
    if (inet_pton(AF_INET, c->address, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
    } else {
        cr_assert_eq(inet_pton(AF_INET6, c->address, &in6->sin6_addr), 1, "bad case address %s",
                     c->address);
        in6->sin6_family = AF_INET6;
    }
    cr_expect_eq(netallow_address_allowed(allow, (struct sockaddr *)&storage, c->host_listed),
                 c->allowed, "list \"%s\", address %s, host_listed %d: expected %s", c->list,
                 c->address, c->host_listed, c->allowed ? "allowed" : "refused");
    netallow_free(allow);
}

Test(netallow, other_families_refused)
{
    struct sockaddr_storage storage;

    memset(&storage, 0, sizeof(storage));
    storage.ss_family = AF_UNIX;
    cr_expect_not(netallow_address_allowed(NULL, (struct sockaddr *)&storage, true));
    cr_expect_not(netallow_address_allowed(NULL, NULL, true));
}

/*
 * netallow.c - the webhook allow list (--webhook-allow): host names and CIDR
 * blocks, and the link-local rule.
 *
 * Every address, IPv4 or IPv6, is held as 16 bytes of IPv6: an IPv4 address
 * a.b.c.d is the IPv4-mapped ::ffff:a.b.c.d and an IPv4 prefix /n is /96+n.
 * One representation means one comparison, and an IPv4-mapped IPv6 literal
 * (::ffff:169.254.169.254) cannot slip past a rule written for IPv4.
 */
#include "netallow.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"

/* Longest entry or host we look at; DNS names stop at 253 bytes. */
#define NETALLOW_ENTRY_MAX 255

/* An address block: the first prefix_bits bits of addr (the rest are zero). */
struct netallow_cidr {
    unsigned char addr[16];
    int prefix_bits; /* 0..128, on the IPv6 form */
};

/* The parsed list. Host names are stored lowercase without a trailing dot. */
struct netallow {
    char **hosts;
    size_t host_count;
    struct netallow_cidr *cidrs;
    size_t cidr_count;
};

/*
 * Protected blocks: link-local, 169.254.0.0/16 (as ::ffff:169.254.0.0/112,
 * holding the AWS, GCP and Azure metadata address 169.254.169.254) and
 * fe80::/10, and the cloud metadata addresses outside it: AWS's IPv6
 * fd00:ec2::254 and Alibaba's 100.100.100.200.
 */
static const struct netallow_cidr netallow_protected[] = {
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 169, 254, 0, 0}, 112},
    {{0xfe, 0x80}, 10},
    {{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54}, 128},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 100, 100, 100, 200}, 128},
};

/* Cloud metadata host names, refused unless the list names them. */
static const char *const netallow_protected_names[] = {
    "metadata.google.internal",
    "metadata.goog",
    NULL,
};

/* ::ffff:0:0/96, the IPv4-mapped block. */
static const unsigned char netallow_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Writes the IPv4-mapped IPv6 form of a 4-byte IPv4 address into addr. */
static void netallow_map_ipv4(const void *ipv4, unsigned char addr[16])
{
    memcpy(addr, netallow_mapped_prefix, sizeof(netallow_mapped_prefix));
    memcpy(addr + 12, ipv4, 4);
}

/*
 * Parses an IP literal strictly (dotted quad or RFC 4291 text) into its
 * 16-byte form. Returns the width of the family it was written in, 32 or
 * 128, or 0 when text is not an IP literal.
 */
static int netallow_parse_ip(const char *text, unsigned char addr[16])
{
    struct in_addr ipv4;

    if (inet_pton(AF_INET, text, &ipv4) == 1) {
        netallow_map_ipv4(&ipv4, addr);
        return 32;
    }
    if (inet_pton(AF_INET6, text, addr) == 1)
        return 128;
    return 0;
}

/*
 * Parses a URL host as an IP literal the way a resolver would: any form
 * inet_aton() takes ("2852039166", "0xa9.0xfe.0xa9.0xfe") is an IPv4
 * address, because getaddrinfo() would connect to it as one. Returns whether
 * host is an IP literal.
 */
static bool netallow_parse_host_ip(const char *host, unsigned char addr[16])
{
    struct in_addr ipv4;

    if (inet_aton(host, &ipv4) != 0) {
        netallow_map_ipv4(&ipv4, addr);
        return true;
    }
    return inet_pton(AF_INET6, host, addr) == 1;
}

/* Whether the first prefix_bits bits of addr equal those of cidr. */
static bool netallow_cidr_contains(const struct netallow_cidr *cidr, const unsigned char addr[16])
{
    int whole = cidr->prefix_bits / 8;
    int rest = cidr->prefix_bits % 8;

    if (memcmp(cidr->addr, addr, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (cidr->addr[whole] & mask) == (addr[whole] & mask);
}

/* Clears the bits of addr after the first prefix_bits, so "10.1.2.3/8" means 10.0.0.0/8. */
static void netallow_mask(unsigned char addr[16], int prefix_bits)
{
    for (int i = 0; i < 16; i++) {
        int keep = prefix_bits - 8 * i;

        if (keep <= 0)
            addr[i] = 0;
        else if (keep < 8)
            addr[i] &= (unsigned char)(0xff << (8 - keep));
    }
}

/* The protected block holding addr, or NULL when it is in none. */
static const struct netallow_cidr *netallow_protected_block(const unsigned char addr[16])
{
    size_t n = sizeof(netallow_protected) / sizeof(netallow_protected[0]);

    for (size_t i = 0; i < n; i++) {
        if (netallow_cidr_contains(&netallow_protected[i], addr))
            return &netallow_protected[i];
    }
    return NULL;
}

/*
 * Whether a listed CIDR holds addr, of protected block, while lying wholly
 * inside that block: "169.254.169.254" or "169.254.0.0/16" open the
 * metadata address, "0.0.0.0/0" or "100.64.0.0/10" do not.
 */
static bool netallow_listed_as_such(const struct netallow *allow, const struct netallow_cidr *block,
                                    const unsigned char addr[16])
{
    if (allow == NULL)
        return false;
    for (size_t i = 0; i < allow->cidr_count; i++) {
        const struct netallow_cidr *cidr = &allow->cidrs[i];

        if (cidr->prefix_bits >= block->prefix_bits && netallow_cidr_contains(block, cidr->addr) &&
            netallow_cidr_contains(cidr, addr))
            return true;
    }
    return false;
}

static bool netallow_in_cidrs(const struct netallow *allow, const unsigned char addr[16])
{
    if (allow == NULL)
        return false;
    for (size_t i = 0; i < allow->cidr_count; i++) {
        if (netallow_cidr_contains(&allow->cidrs[i], addr))
            return true;
    }
    return false;
}

/*
 * Copies host into buf (size NETALLOW_ENTRY_MAX + 1) without surrounding
 * brackets ("[::1]" is "::1"). Returns false when host is too long to be a
 * host. host may be buf itself.
 */
static bool netallow_bare_host(const char *host, char *buf)
{
    size_t len = strlen(host);

    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len > NETALLOW_ENTRY_MAX)
        return false;
    memmove(buf, host, len);
    buf[len] = '\0';
    return true;
}

/* Removes one trailing dot: "example.com." names the same host as "example.com". */
static void netallow_strip_dot(char *name)
{
    size_t len = strlen(name);

    if (len > 1 && name[len - 1] == '.')
        name[len - 1] = '\0';
}

/*
 * Whether name is a plausible DNS host name: labels of letters, digits, '-'
 * and '_' separated by dots, none empty or over 63 bytes, and a last label
 * that is not all digits (that would be a malformed IPv4 address).
 */
static bool netallow_valid_name(const char *name)
{
    size_t label = 0;
    bool all_digits = true;

    if (*name == '\0' || strlen(name) > 253)
        return false;
    for (const char *p = name;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0)
                return false;
            if (*p == '\0')
                return !all_digits;
            label = 0;
            all_digits = true;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return false;
        if (!isdigit((unsigned char)*p))
            all_digits = false;
        if (++label > 63)
            return false;
    }
}

/*
 * Parses one trimmed, non-empty entry into allow. Returns CF_OK,
 * CF_ERR_INVALID with errbuf filled, or CF_ERR_NOMEM.
 */
static int netallow_add_entry(struct netallow *allow, const char *entry, char *errbuf,
                              size_t errlen)
{
    char text[NETALLOW_ENTRY_MAX + 1];
    const char *slash = strchr(entry, '/');
    struct netallow_cidr cidr;
    int width;

    if (slash != NULL) {
        size_t addr_len = (size_t)(slash - entry);
        const char *digits = slash + 1;
        int prefix = 0;

        if (addr_len > NETALLOW_ENTRY_MAX)
            goto bad_entry;
        memcpy(text, entry, addr_len);
        text[addr_len] = '\0';
        if (!netallow_bare_host(text, text))
            goto bad_entry;
        width = netallow_parse_ip(text, cidr.addr);
        if (width == 0)
            goto bad_entry;
        if (*digits == '\0' || strlen(digits) > 3)
            goto bad_prefix;
        for (const char *p = digits; *p != '\0'; p++) {
            if (!isdigit((unsigned char)*p))
                goto bad_prefix;
            prefix = prefix * 10 + (*p - '0');
        }
        if (prefix > width)
            goto bad_prefix;
        cidr.prefix_bits = width == 32 ? 96 + prefix : prefix;
        netallow_mask(cidr.addr, cidr.prefix_bits);
    } else {
        if (!netallow_bare_host(entry, text))
            goto bad_entry;
        width = netallow_parse_ip(text, cidr.addr);
        if (width != 0) {
            cidr.prefix_bits = 128;
        } else {
            char *name;
            char **hosts;

            netallow_strip_dot(text);
            if (!netallow_valid_name(text))
                goto bad_entry;
            name = cf_strdup(text);
            if (name == NULL)
                return CF_ERR_NOMEM;
            for (char *p = name; *p != '\0'; p++)
                *p = (char)tolower((unsigned char)*p);
            hosts = realloc(allow->hosts, (allow->host_count + 1) * sizeof(*hosts));
            if (hosts == NULL) {
                free(name);
                return CF_ERR_NOMEM;
            }
            allow->hosts = hosts;
            allow->hosts[allow->host_count++] = name;
            return CF_OK;
        }
    }

    struct netallow_cidr *cidrs =
        realloc(allow->cidrs, (allow->cidr_count + 1) * sizeof(*allow->cidrs));
    if (cidrs == NULL)
        return CF_ERR_NOMEM;
    allow->cidrs = cidrs;
    allow->cidrs[allow->cidr_count++] = cidr;
    return CF_OK;

bad_prefix:
    snprintf(errbuf, errlen, "bad prefix length in webhook allow entry \"%.*s\"",
             NETALLOW_ENTRY_MAX, entry);
    return CF_ERR_INVALID;
bad_entry:
    snprintf(errbuf, errlen, "invalid webhook allow entry \"%.*s\": not a host name or cidr",
             NETALLOW_ENTRY_MAX, entry);
    return CF_ERR_INVALID;
}

int netallow_parse(const char *list, struct netallow **out, char *errbuf, size_t errlen)
{
    struct netallow *allow = NULL;
    char *copy = NULL;
    char *next;
    int ret;

    *out = NULL;
    if (errlen > 0)
        errbuf[0] = '\0';
    allow = calloc(1, sizeof(*allow));
    if (allow == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }
    if (list == NULL)
        list = "";
    copy = cf_strdup(list);
    if (copy == NULL) {
        ret = CF_ERR_NOMEM;
        goto out;
    }

    /* Entries are comma-separated; blanks around them and empty entries are skipped. */
    next = copy;
    while (next != NULL) {
        char *entry = next;
        char *comma = strchr(entry, ',');
        char *end;

        next = NULL;
        if (comma != NULL) {
            *comma = '\0';
            next = comma + 1;
        }
        while (*entry == ' ' || *entry == '\t')
            entry++;
        end = entry + strlen(entry);
        while (end > entry && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (*entry == '\0')
            continue;
        ret = netallow_add_entry(allow, entry, errbuf, errlen);
        if (ret != CF_OK)
            goto out;
    }

    *out = allow;
    allow = NULL;
    ret = CF_OK;
out:
    free(copy);
    netallow_free(allow);
    return ret;
}

void netallow_free(struct netallow *allow)
{
    if (allow == NULL)
        return;
    for (size_t i = 0; i < allow->host_count; i++)
        free(allow->hosts[i]);
    free(allow->hosts);
    free(allow->cidrs);
    free(allow);
}

/* Whether the list is empty, so that everything but link-local is allowed. */
static bool netallow_empty(const struct netallow *allow)
{
    return allow == NULL || (allow->host_count == 0 && allow->cidr_count == 0);
}

/* The address check of netallow_address_allowed() on the 16-byte form. */
static bool netallow_addr16_allowed(const struct netallow *allow, const unsigned char addr[16],
                                    bool host_listed)
{
    const struct netallow_cidr *block = netallow_protected_block(addr);

    if (block != NULL)
        return netallow_listed_as_such(allow, block, addr);
    if (netallow_empty(allow) || host_listed)
        return true;
    return netallow_in_cidrs(allow, addr);
}

bool netallow_names_host(const struct netallow *allow, const char *host)
{
    char bare[NETALLOW_ENTRY_MAX + 1];

    if (allow == NULL || host == NULL || !netallow_bare_host(host, bare))
        return false;
    netallow_strip_dot(bare);
    for (size_t i = 0; i < allow->host_count; i++) {
        if (strcasecmp(allow->hosts[i], bare) == 0)
            return true;
    }
    return false;
}

bool netallow_host_allowed(const struct netallow *allow, const char *host)
{
    char bare[NETALLOW_ENTRY_MAX + 1];
    unsigned char addr[16];
    char *zone;

    if (host == NULL || !netallow_bare_host(host, bare))
        return false;
    netallow_strip_dot(bare);
    if (bare[0] == '\0')
        return false;
    /* An IPv6 zone id ("fe80::1%eth0") does not change which address it is. */
    zone = strchr(bare, '%');
    if (zone != NULL && strchr(bare, ':') != NULL)
        *zone = '\0';
    if (netallow_parse_host_ip(bare, addr))
        return netallow_addr16_allowed(allow, addr, false);
    /* Whatever else has a colon is neither a name nor an address. */
    if (strchr(bare, ':') != NULL)
        return false;
    for (size_t i = 0; netallow_protected_names[i] != NULL; i++) {
        if (strcasecmp(bare, netallow_protected_names[i]) == 0)
            return netallow_names_host(allow, bare);
    }
    return netallow_empty(allow) || netallow_names_host(allow, bare);
}

bool netallow_address_allowed(const struct netallow *allow, const struct sockaddr *addr,
                              bool host_listed)
{
    unsigned char addr16[16];

    if (addr == NULL)
        return false;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;

        netallow_map_ipv4(&in4->sin_addr, addr16);
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;

        memcpy(addr16, &in6->sin6_addr, 16);
    } else {
        return false;
    }
    return netallow_addr16_allowed(allow, addr16, host_listed);
}

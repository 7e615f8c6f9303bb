/*
 * netallow.h - which hosts webhooks may reach (--webhook-allow).
 *
 * An allow list holds host names and CIDR blocks (IPv4 and IPv6). An empty
 * list allows everything except the protected addresses: link-local
 * (169.254.0.0/16, which holds 169.254.169.254, and fe80::/10) and the
 * cloud metadata addresses fd00:ec2::254 and 100.100.100.200. A non-empty
 * list allows only what it names. A protected address is allowed only when
 * listed as such: by a listed CIDR that contains it and lies wholly inside
 * its protected block ("169.254.169.254", "169.254.0.0/16", "fe80::/64"),
 * never by a catch-all such as 0.0.0.0/0 or ::/0, nor by a listed name
 * that resolves to it. The metadata host names metadata.google.internal
 * and metadata.goog are refused unless the list names them (and their
 * address must then be listed too). IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) are checked as the IPv4 address they map. The
 * functions below take a NULL allow list as the empty list.
 */
#ifndef CF_NETALLOW_H
#define CF_NETALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct netallow;

/*
 * Parses a comma-separated list ("hooks.example.com,10.0.0.0/8,::1/128";
 * NULL or "" for the empty list) into a new allow list in *out (free with
 * netallow_free()). Returns CF_OK, or CF_ERR_INVALID with a message naming
 * the bad entry in errbuf (errlen bytes), or CF_ERR_NOMEM.
 */
int netallow_parse(const char *list, struct netallow **out, char *errbuf, size_t errlen);

/* Frees an allow list; accepts NULL. */
void netallow_free(struct netallow *allow);

/*
 * Whether a URL's host may be used, checked before any name resolution:
 * host is a name or an IP literal (IPv6 without brackets). A name is allowed
 * by an empty list, or when the list names it (case-insensitive). An IP
 * literal is checked as netallow_address_allowed() does.
 */
bool netallow_host_allowed(const struct netallow *allow, const char *host);

/*
 * Whether a resolved address may be connected to: link-local only when a
 * listed CIDR contains it; with a non-empty list, only addresses inside a
 * listed CIDR, or any address when the connection's host name was listed
 * (host_listed). Used at connect time so that a name resolving to a
 * link-local address is refused too.
 */
bool netallow_address_allowed(const struct netallow *allow, const struct sockaddr *addr,
                              bool host_listed);

/* Whether the list names host (case-insensitive), as opposed to allowing it by CIDR or default. */
bool netallow_names_host(const struct netallow *allow, const char *host);

#endif

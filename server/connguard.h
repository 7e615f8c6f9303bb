/*
 * connguard.h - guards the HTTP server's connections while they wait for
 * request headers: a deadline for the headers, and a cap on how many
 * connections of one client address may wait at once.
 *
 * A connection "waits" from its accept, and again from the end of each
 * response until the next request's headers are complete (an idle
 * keep-alive connection waits too). One that has waited longer than
 * header_timeout_ms is shut down, however steadily it trickles bytes: the
 * server's own inactivity timeout alone cannot see a client that sends one
 * byte every few seconds. When a new connection makes its address hold more
 * than waiting_per_address waiting connections, the oldest of them is shut
 * down. So a flood of slow clients from one address cannot lock the address
 * out: a client that sends its request at once (a health checker) still
 * gets through, since its connection stops waiting as soon as its headers
 * are in, long before it becomes the oldest.
 *
 * "Shut down" is shutdown(2) on the socket; the server then sees the end of
 * the stream and closes the connection in its own thread. Every function is
 * thread-safe. Times are CLOCK_BOOTTIME milliseconds.
 */
#ifndef CF_CONNGUARD_H
#define CF_CONNGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct connguard;
struct connguard_conn;

/*
 * Creates a guard; with sweeper, a thread checks the deadlines every
 * 500 ms until connguard_free(). Returns CF_OK with *out, or CF_ERR_NOMEM /
 * CF_ERR_IO (no thread).
 */
int connguard_new(int64_t header_timeout_ms, size_t waiting_per_address, bool sweeper,
                  struct connguard **out);

/* Stops the sweeper and frees the guard; accepts NULL. Connections must all be closed. */
void connguard_free(struct connguard *guard);

/*
 * Registers an accepted connection on socket fd from addr, waiting for its
 * first request from now_ms; may shut down its address's oldest waiting
 * connection. Returns the entry, or NULL when out of memory (the connection
 * is then not guarded).
 */
struct connguard_conn *connguard_open(struct connguard *guard, int fd, const struct sockaddr *addr,
                                      int64_t now_ms);

/* The connection's request headers are complete: it stops waiting. Accepts NULL. */
void connguard_headers_done(struct connguard *guard, struct connguard_conn *conn);

/* The connection answered a request and waits for the next one from now_ms. Accepts NULL. */
void connguard_request_done(struct connguard *guard, struct connguard_conn *conn, int64_t now_ms);

/* Forgets a connection before its socket is closed; accepts NULL. */
void connguard_close(struct connguard *guard, struct connguard_conn *conn);

/* Shuts down the connections that have waited past the deadline; returns how many. */
size_t connguard_sweep(struct connguard *guard, int64_t now_ms);

/* Connections waiting for headers now, and those shut down so far (for tests and logs). */
size_t connguard_waiting(struct connguard *guard);
uint64_t connguard_shut_count(struct connguard *guard);

#endif

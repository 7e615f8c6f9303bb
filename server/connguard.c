/*
 * connguard.c - header deadline and per-address cap of waiting connections
 * (see connguard.h).
 *
 * Connections are kept in one list, oldest first, under one mutex; the
 * server holds at most a few thousand, so a walk per accept and per sweep
 * costs microseconds. Each entry remembers its socket's inode: a shutdown
 * is only sent when the descriptor still refers to that very socket, so a
 * descriptor number the server has closed and reused is never touched.
 */
#include "connguard.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "http_parse.h"
#include "log.h"

/* How often the sweeper checks the deadlines. */
#define CONNGUARD_SWEEP_MS 500

/*
 * One connection. prev/next link the guard's list; waiting_since_ms is
 * meaningful only while waiting. All fields belong to the guard's mutex.
 */
struct connguard_conn {
    struct connguard_conn *prev, *next;
    int fd;
    ino_t inode;
    char key[HTTP_ADDRESS_KEY_LEN];
    bool waiting;
    bool shut; /* shut down already: no longer counted */
    int64_t waiting_since_ms;
};

struct connguard {
    pthread_mutex_t lock;
    struct connguard_conn *head, *tail; /* oldest first */
    int64_t header_timeout_ms;
    size_t waiting_per_address;
    uint64_t shut_count;
    /* The sweeper thread; stop and wake are under lock. */
    bool has_sweeper;
    bool stop;
    pthread_cond_t wake;
    pthread_t sweeper;
};

/* Shuts conn's socket down when the descriptor still holds that socket; under lock. */
static void shut_conn(struct connguard *guard, struct connguard_conn *conn, const char *why)
{
    struct stat st;

    conn->shut = true;
    conn->waiting = false;
    guard->shut_count++;
    if (fstat(conn->fd, &st) != 0 || st.st_ino != conn->inode)
        return;
    shutdown(conn->fd, SHUT_RDWR);
    log_debug("http connection dropped", "reason=%s client=%s", why, conn->key);
}

static void *sweeper_main(void *arg)
{
    struct connguard *guard = arg;
    struct timespec deadline;

    pthread_mutex_lock(&guard->lock);
    while (!guard->stop) {
        cf_monotonic_deadline(CONNGUARD_SWEEP_MS, &deadline);
        pthread_cond_timedwait(&guard->wake, &guard->lock, &deadline);
        if (guard->stop)
            break;
        pthread_mutex_unlock(&guard->lock);
        connguard_sweep(guard, cf_boot_ms());
        pthread_mutex_lock(&guard->lock);
    }
    pthread_mutex_unlock(&guard->lock);
    return NULL;
}

int connguard_new(int64_t header_timeout_ms, size_t waiting_per_address, bool sweeper,
                  struct connguard **out)
{
    struct connguard *guard = calloc(1, sizeof(*guard));

    *out = NULL;
    if (guard == NULL)
        return CF_ERR_NOMEM;
    guard->header_timeout_ms = header_timeout_ms;
    guard->waiting_per_address = waiting_per_address;
    pthread_mutex_init(&guard->lock, NULL);
    cf_monotonic_cond_init(&guard->wake);
    if (sweeper) {
        if (pthread_create(&guard->sweeper, NULL, sweeper_main, guard) != 0) {
            pthread_cond_destroy(&guard->wake);
            pthread_mutex_destroy(&guard->lock);
            free(guard);
            return CF_ERR_IO;
        }
        guard->has_sweeper = true;
    }
    *out = guard;
    return CF_OK;
}

void connguard_free(struct connguard *guard)
{
    if (guard == NULL)
        return;
    if (guard->has_sweeper) {
        pthread_mutex_lock(&guard->lock);
        guard->stop = true;
        pthread_cond_signal(&guard->wake);
        pthread_mutex_unlock(&guard->lock);
        pthread_join(guard->sweeper, NULL);
    }
    while (guard->head != NULL) {
        struct connguard_conn *next = guard->head->next;

        free(guard->head);
        guard->head = next;
    }
    pthread_cond_destroy(&guard->wake);
    pthread_mutex_destroy(&guard->lock);
    free(guard);
}

struct connguard_conn *connguard_open(struct connguard *guard, int fd, const struct sockaddr *addr,
                                      int64_t now_ms)
{
    struct connguard_conn *conn = calloc(1, sizeof(*conn));
    struct stat st;
    size_t waiting = 0;

    if (conn == NULL)
        return NULL;
    conn->fd = fd;
    conn->inode = fstat(fd, &st) == 0 ? st.st_ino : 0;
    http_address_key(addr, conn->key);
    conn->waiting = true;
    conn->waiting_since_ms = now_ms;

    pthread_mutex_lock(&guard->lock);
    for (struct connguard_conn *c = guard->head; c != NULL; c = c->next)
        waiting += c->waiting && strcmp(c->key, conn->key) == 0;
    /* With this one, the address must not have more than its share waiting: the oldest go. */
    while (waiting + 1 > guard->waiting_per_address && waiting > 0) {
        struct connguard_conn *oldest = NULL;

        for (struct connguard_conn *c = guard->head; c != NULL; c = c->next) {
            if (c->waiting && strcmp(c->key, conn->key) == 0 &&
                (oldest == NULL || c->waiting_since_ms < oldest->waiting_since_ms))
                oldest = c;
        }
        shut_conn(guard, oldest, "too many connections waiting for headers");
        waiting--;
    }
    conn->prev = guard->tail;
    if (guard->tail != NULL)
        guard->tail->next = conn;
    else
        guard->head = conn;
    guard->tail = conn;
    pthread_mutex_unlock(&guard->lock);
    return conn;
}

void connguard_headers_done(struct connguard *guard, struct connguard_conn *conn)
{
    if (conn == NULL)
        return;
    pthread_mutex_lock(&guard->lock);
    conn->waiting = false;
    pthread_mutex_unlock(&guard->lock);
}

void connguard_request_done(struct connguard *guard, struct connguard_conn *conn, int64_t now_ms)
{
    if (conn == NULL)
        return;
    pthread_mutex_lock(&guard->lock);
    if (!conn->shut) {
        conn->waiting = true;
        conn->waiting_since_ms = now_ms;
    }
    pthread_mutex_unlock(&guard->lock);
}

void connguard_close(struct connguard *guard, struct connguard_conn *conn)
{
    if (conn == NULL)
        return;
    pthread_mutex_lock(&guard->lock);
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else
        guard->head = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    else
        guard->tail = conn->prev;
    pthread_mutex_unlock(&guard->lock);
    free(conn);
}

size_t connguard_sweep(struct connguard *guard, int64_t now_ms)
{
    size_t shut = 0;

    pthread_mutex_lock(&guard->lock);
    for (struct connguard_conn *c = guard->head; c != NULL; c = c->next) {
        if (c->waiting && now_ms - c->waiting_since_ms >= guard->header_timeout_ms) {
            shut_conn(guard, c, "request headers not complete in time");
            shut++;
        }
    }
    pthread_mutex_unlock(&guard->lock);
    return shut;
}

size_t connguard_waiting(struct connguard *guard)
{
    size_t waiting = 0;

    pthread_mutex_lock(&guard->lock);
    for (struct connguard_conn *c = guard->head; c != NULL; c = c->next)
        waiting += c->waiting;
    pthread_mutex_unlock(&guard->lock);
    return waiting;
}

uint64_t connguard_shut_count(struct connguard *guard)
{
    uint64_t count;

    pthread_mutex_lock(&guard->lock);
    count = guard->shut_count;
    pthread_mutex_unlock(&guard->lock);
    return count;
}

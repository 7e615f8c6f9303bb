/*
 * minting.c - per job with claims in flight, the highest token minted.
 *
 * Representation: a fixed array of hash buckets, each a singly linked list
 * of entries (job name, highest token minted, claims in flight), guarded by
 * one mutex; the critical sections are a lookup and a few stores.
 */
#include "minting.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "coord.h"

#define MINTING_BUCKETS 1024

struct entry {
    struct entry *next;
    int64_t minted; /* highest token minted for the job's claims in flight; 0: none */
    size_t claims;
    char job[];
};

struct minting {
    pthread_mutex_t lock;
    size_t jobs;
    struct entry *buckets[MINTING_BUCKETS];
};

static size_t bucket_of(const char *job)
{
    return (size_t)(cf_fnv1a(CF_FNV1A_START, job) % MINTING_BUCKETS);
}

/* The link that points at job's entry, or at the end of its bucket; the lock is held. */
static struct entry **find(struct minting *m, const char *job)
{
    struct entry **link = &m->buckets[bucket_of(job)];

    while (*link != NULL && strcmp((*link)->job, job) != 0)
        link = &(*link)->next;
    return link;
}

struct minting *minting_new(void)
{
    struct minting *m = calloc(1, sizeof(*m));

    if (m != NULL)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void minting_free(struct minting *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < MINTING_BUCKETS; i++) {
        while (m->buckets[i] != NULL) {
            struct entry *entry = m->buckets[i];

            m->buckets[i] = entry->next;
            free(entry);
        }
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int minting_enter(struct minting *m, const char *job)
{
    struct entry **link;
    int ret = CF_OK;

    pthread_mutex_lock(&m->lock);
    link = find(m, job);
    if (*link == NULL) {
        size_t len = strlen(job) + 1;
        struct entry *entry = calloc(1, sizeof(*entry) + len);

        if (entry == NULL) {
            ret = CF_ERR_NOMEM;
            goto out;
        }
        memcpy(entry->job, job, len);
        *link = entry;
        m->jobs++;
    }
    (*link)->claims++;
out:
    pthread_mutex_unlock(&m->lock);
    return ret;
}

int64_t minting_mint(struct minting *m, const char *job, int64_t highest, unsigned ordinal)
{
    struct entry *entry;
    int64_t token;

    pthread_mutex_lock(&m->lock);
    entry = *find(m, job);
    if (entry != NULL && entry->minted > highest)
        highest = entry->minted;
    token = coord_mint_token(highest, ordinal);
    if (entry != NULL && token > 0)
        entry->minted = token;
    pthread_mutex_unlock(&m->lock);
    return token;
}

void minting_leave(struct minting *m, const char *job)
{
    struct entry **link, *entry;

    pthread_mutex_lock(&m->lock);
    link = find(m, job);
    entry = *link;
    if (entry != NULL && --entry->claims == 0) {
        *link = entry->next;
        free(entry);
        m->jobs--;
    }
    pthread_mutex_unlock(&m->lock);
}

size_t minting_jobs(struct minting *m)
{
    size_t jobs;

    pthread_mutex_lock(&m->lock);
    jobs = m->jobs;
    pthread_mutex_unlock(&m->lock);
    return jobs;
}

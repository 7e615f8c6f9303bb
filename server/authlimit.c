/*
 * authlimit.c - failed-authentication budget per address (see authlimit.h).
 *
 * Each slot keeps a "theoretical arrival time" (the generic cell rate
 * algorithm): every failure pushes it refill_ms further past max(it, now),
 * and an address has budget left while one more failure would keep it
 * within burst * refill_ms of now. A slot whose time is in the past has its whole budget
 * back, which is the same as no slot at all: such slots are free to reuse.
 * Slots are grouped in sets of AUTHLIMIT_WAYS picked by a hash of the key.
 */
#include "authlimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "http_parse.h"

#define AUTHLIMIT_WAYS 8
#define AUTHLIMIT_SETS (AUTHLIMIT_SLOTS / AUTHLIMIT_WAYS)

struct authlimit_slot {
    char key[HTTP_ADDRESS_KEY_LEN];
    int64_t tat_ms; /* budget is full once now reaches it */
};

struct authlimit {
    pthread_mutex_t lock;
    unsigned burst;
    int64_t refill_ms;
    struct authlimit_slot slots[AUTHLIMIT_SLOTS];
};

int authlimit_new(unsigned burst, int64_t refill_ms, struct authlimit **out)
{
    struct authlimit *limit = calloc(1, sizeof(*limit));

    *out = NULL;
    if (limit == NULL)
        return CF_ERR_NOMEM;
    pthread_mutex_init(&limit->lock, NULL);
    limit->burst = burst > 0 ? burst : 1;
    limit->refill_ms = refill_ms > 0 ? refill_ms : 1;
    *out = limit;
    return CF_OK;
}

void authlimit_free(struct authlimit *limit)
{
    if (limit == NULL)
        return;
    pthread_mutex_destroy(&limit->lock);
    free(limit);
}

/* FNV-1a of the key. */
static uint32_t key_hash(const char *key)
{
    return (uint32_t)cf_fnv1a(CF_FNV1A_START, key);
}

/* The slot of key, or NULL when it has none; under lock. */
static struct authlimit_slot *find_slot(struct authlimit *limit, const char *key)
{
    struct authlimit_slot *set = &limit->slots[(key_hash(key) % AUTHLIMIT_SETS) * AUTHLIMIT_WAYS];

    for (int i = 0; i < AUTHLIMIT_WAYS; i++)
        if (set[i].key[0] != '\0' && strcmp(set[i].key, key) == 0)
            return &set[i];
    return NULL;
}

/* The slot of key, taking over the most refilled slot of its set when it has none; under lock. */
static struct authlimit_slot *take_slot(struct authlimit *limit, const char *key)
{
    struct authlimit_slot *set = &limit->slots[(key_hash(key) % AUTHLIMIT_SETS) * AUTHLIMIT_WAYS];
    struct authlimit_slot *slot = find_slot(limit, key), *victim = &set[0];

    if (slot != NULL)
        return slot;
    for (int i = 1; i < AUTHLIMIT_WAYS; i++)
        if (set[i].tat_ms < victim->tat_ms)
            victim = &set[i];
    snprintf(victim->key, sizeof(victim->key), "%s", key);
    victim->tat_ms = 0;
    return victim;
}

bool authlimit_allowed(struct authlimit *limit, const char *key, int64_t now_ms,
                       unsigned *retry_after_s)
{
    int64_t window_ms = (int64_t)limit->burst * limit->refill_ms;
    struct authlimit_slot *slot;
    int64_t wait_ms = 0;

    pthread_mutex_lock(&limit->lock);
    slot = find_slot(limit, key);
    /* One more failure must fit: tat + refill_ms <= now + window_ms. */
    if (slot != NULL && slot->tat_ms - now_ms > window_ms - limit->refill_ms)
        wait_ms = slot->tat_ms - (window_ms - limit->refill_ms) - now_ms;
    pthread_mutex_unlock(&limit->lock);
    if (wait_ms > 0 && retry_after_s != NULL)
        *retry_after_s = (unsigned)((wait_ms + 999) / 1000);
    return wait_ms <= 0;
}

bool authlimit_failed(struct authlimit *limit, const char *key, int64_t now_ms)
{
    int64_t window_ms = (int64_t)limit->burst * limit->refill_ms;
    struct authlimit_slot *slot;
    bool exhausted;

    pthread_mutex_lock(&limit->lock);
    slot = take_slot(limit, key);
    if (slot->tat_ms < now_ms)
        slot->tat_ms = now_ms;
    exhausted = slot->tat_ms - now_ms <= window_ms - limit->refill_ms;
    slot->tat_ms += limit->refill_ms;
    exhausted = exhausted && slot->tat_ms - now_ms > window_ms - limit->refill_ms;
    pthread_mutex_unlock(&limit->lock);
    return exhausted;
}

/*
 * fired_slots.c - a direct-mapped table of job name -> latest slot heard
 * committed, guarded by one mutex.
 */
#include "fired_slots.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "job.h"

#define FIRED_SLOTS_ENTRIES 16384

struct entry {
    int64_t slot_ms; /* 0: empty */
    char job[JOB_NAME_MAX + 1];
};

struct fired_slots {
    pthread_mutex_t lock;
    struct entry entries[FIRED_SLOTS_ENTRIES];
};

static struct entry *entry_of(struct fired_slots *f, const char *job)
{
    return &f->entries[cf_fnv1a(CF_FNV1A_START, job) % FIRED_SLOTS_ENTRIES];
}

struct fired_slots *fired_slots_new(void)
{
    struct fired_slots *f = calloc(1, sizeof(*f));

    if (f != NULL)
        pthread_mutex_init(&f->lock, NULL);
    return f;
}

void fired_slots_free(struct fired_slots *f)
{
    if (f == NULL)
        return;
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void fired_slots_note(struct fired_slots *f, const char *job, int64_t slot_ms)
{
    struct entry *e = entry_of(f, job);

    if (strlen(job) > JOB_NAME_MAX || slot_ms <= 0)
        return;
    pthread_mutex_lock(&f->lock);
    if (e->slot_ms == 0 || strcmp(e->job, job) != 0) {
        strcpy(e->job, job);
        e->slot_ms = slot_ms;
    } else if (slot_ms > e->slot_ms) {
        e->slot_ms = slot_ms;
    }
    pthread_mutex_unlock(&f->lock);
}

int64_t fired_slots_latest(struct fired_slots *f, const char *job)
{
    struct entry *e = entry_of(f, job);
    int64_t slot_ms = 0;

    pthread_mutex_lock(&f->lock);
    if (e->slot_ms != 0 && strcmp(e->job, job) == 0)
        slot_ms = e->slot_ms;
    pthread_mutex_unlock(&f->lock);
    return slot_ms;
}

bool fired_slots_note_announcement(struct fired_slots *f, const char *text, size_t len)
{
    char job[JOB_NAME_MAX + 1];
    int64_t slot_ms = 0;
    size_t i = 0;

    while (i < len && text[i] >= '0' && text[i] <= '9' && i < 16)
        slot_ms = slot_ms * 10 + (text[i++] - '0');
    if (i == 0 || i >= len || text[i] != ' ' || len - i - 1 == 0 || len - i - 1 > JOB_NAME_MAX)
        return false;
    memcpy(job, text + i + 1, len - i - 1);
    job[len - i - 1] = '\0';
    if (strlen(job) != len - i - 1)
        return false; /* a NUL inside */
    fired_slots_note(f, job, slot_ms);
    return true;
}

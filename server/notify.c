/*
 * notify.c - the notification thread: a queue of notices, each checked
 * against the stored run, then sent with libcurl's easy interface.
 *
 * The queue is a list guarded by lock; the thread alone takes notices off
 * it, sends them one at a time and puts back those that wait for a retry.
 */
#include "notify.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common.h"
#include "job.h"
#include "log.h"
#include "notify_rule.h"
#include "signature.h"
#include "signing_secrets.h"

/* Runs queued lately, remembered so that a second stored state of one outcome queues nothing. */
#define NOTIFY_RECENT 256

/* One attempt's limit, and the first wait before a retry (doubling after each). */
#define NOTIFY_TIMEOUT_MS 10000
#define NOTIFY_BACKOFF_MS 1000

/* A run to notify about, owned by the queue or by the thread. */
struct notice {
    struct notice *next;
    struct run run;      /* the state that was stored */
    int64_t due_boot_ms; /* not before */
    int attempts;        /* sent so far */
    /* Filled once the notice is found due for sending (see notice_prepare()). */
    char *url;
    char *body;
    char secrets[SIGNATURE_SECRETS_MAX][SIGNING_SECRET_MAX + 1]; /* signs it, newest first */
    size_t secret_count;
    char *host; /* of url, for the allow list's explicitly listed hosts */
    enum notify_event event;
};

struct notify {
    struct notify_config cfg;
    pthread_t thread;
    pthread_mutex_t lock; /* guards the fields below */
    pthread_cond_t wake;
    bool stopping;
    struct notice *queue; /* unordered */
    size_t queued;
    int64_t dropped;
    /* A ring of the runs (id and status) queued last. */
    struct {
        char id[RUN_ID_MAX];
        enum run_status status;
    } recent[NOTIFY_RECENT];
    size_t recent_next;
    /*
     * The coordinator (see notify_set_coord()), NULL until set, guarded by
     * coord_lock, which is held across each call into it so that unsetting
     * it waits for the call in progress. Never taken with lock held.
     */
    pthread_mutex_t coord_lock;
    struct coord *coord;
    /* The signing secrets (see notify_set_secrets()), NULL until set; guarded by coord_lock. */
    struct signing_secrets *secrets;
};

/* Whether run's outcome was queued lately; notes it when not (lock held). */
static bool seen_lately(struct notify *notify, const struct run *run)
{
    for (size_t i = 0; i < NOTIFY_RECENT; i++)
        if (notify->recent[i].status == run->status && strcmp(notify->recent[i].id, run->id) == 0)
            return true;
    snprintf(notify->recent[notify->recent_next].id, RUN_ID_MAX, "%s", run->id);
    notify->recent[notify->recent_next].status = run->status;
    notify->recent_next = (notify->recent_next + 1) % NOTIFY_RECENT;
    return false;
}

static void notice_free(struct notice *notice)
{
    if (notice == NULL)
        return;
    run_clear(&notice->run);
    free(notice->url);
    free(notice->body);
    free(notice->host);
    free(notice);
}

void notify_run_changed(struct notify *notify, const struct run *run)
{
    struct notice *notice;
    bool full;

    if (notify == NULL || run->instance == NULL || !run_status_final(run->status) ||
        run->status == RUN_SKIPPED ||
        (run->status != RUN_LOST && strcmp(run->instance, notify->cfg.instance_id) != 0))
        return;
    notice = calloc(1, sizeof(*notice));
    if (notice == NULL || run_copy(&notice->run, run) != CF_OK) {
        free(notice);
        log_warn("notification dropped", "run=%s error=\"out of memory\"", run->id);
        return;
    }
    /* A missed or lost slot may be recorded by others too: let the records merge first. */
    notice->due_boot_ms =
        cf_boot_ms() +
        (run->status == RUN_MISSED || run->status == RUN_LOST ? NOTIFY_SETTLE_MS : 0);
    pthread_mutex_lock(&notify->lock);
    if (seen_lately(notify, run)) {
        pthread_mutex_unlock(&notify->lock);
        notice_free(notice);
        return;
    }
    full = notify->queued >= NOTIFY_QUEUE_MAX || notify->stopping;
    if (!full) {
        notice->next = notify->queue;
        notify->queue = notice;
        notify->queued++;
        pthread_cond_signal(&notify->wake);
    } else {
        notify->dropped++;
    }
    pthread_mutex_unlock(&notify->lock);
    if (full) {
        log_warn("notification dropped", "job=%s run=%s reason=\"queue full\"", run->job, run->id);
        notice_free(notice);
    }
}

/* The host of url without brackets, as a new string; NULL when none or out of memory. */
static char *notify_url_host(const char *url)
{
    CURLU *parsed = curl_url();
    char *host = NULL, *copy = NULL;

    if (parsed != NULL && curl_url_set(parsed, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(parsed, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        size_t len = strlen(host);

        if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
            copy = strndup(host + 1, len - 2);
        else
            copy = strdup(host);
    }
    curl_free(host);
    curl_url_cleanup(parsed);
    return copy;
}

int notify_check_url(const char *url, const struct netallow *allow, char *err, size_t errlen)
{
    CURLU *parsed = curl_url();
    char *scheme = NULL, *host = NULL;
    int ret = CF_ERR_INVALID;

    if (parsed != NULL && curl_url_set(parsed, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
        curl_url_get(parsed, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] != '\0')
        ret = netallow_host_allowed(allow, host) ? CF_OK : CF_ERR_INVALID;
    if (ret != CF_OK)
        snprintf(err, errlen,
                 "--notify-url must be an http or https url to an allowed host, got %s", url);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(parsed);
    return ret;
}

/* Whether this instance sends the notice of stored, the stored record of a run that ended with
 * status. */
static bool notify_is_sender(struct notify *notify, const struct run *stored,
                             enum run_status status)
{
    if (stored->status != status || stored->instance == NULL)
        return false;
    if (status == RUN_LOST) {
        bool first;

        pthread_mutex_lock(&notify->coord_lock);
        first = notify->coord == NULL ||
                notify->coord->ops->rank(notify->coord, stored->job, stored->scheduled_at_ms) == 0;
        pthread_mutex_unlock(&notify->coord_lock);
        return first;
    }
    return strcmp(stored->instance, notify->cfg.instance_id) == 0;
}

/*
 * Decides what notice says, from the stored run and its job: fills url,
 * body, secret and event. Returns false when nothing is to be sent (the
 * job asks for no such event, or has no URL, or the stored record no longer
 * names this instance with that status, or memory is short).
 */
static bool notice_prepare(struct notify *notify, struct notice *notice)
{
    const struct run *run = &notice->run;
    struct job *job = NULL;
    struct run stored;
    const char *url;
    unsigned on;
    enum notify_format format;
    int previous = -1;
    bool ok = false;
    json_t *doc = NULL;

    if (db_run_get(notify->cfg.db, run->id, &stored) != CF_OK)
        return false;
    if (!notify_is_sender(notify, &stored, run->status)) {
        run_clear(&stored);
        return false;
    }
    run_clear(&stored);
    if (db_job_get(notify->cfg.db, run->job, &job) != CF_OK)
        return false;
    if (job->notify.url != NULL) {
        url = job->notify.url;
        on = job->notify.on;
        format = job->notify.format;
    } else {
        url = notify->cfg.default_url;
        on = NOTIFY_ON_DEFAULT;
        format = NOTIFY_FORMAT_JSON;
    }
    if (url == NULL)
        goto out;
    if (run->status == RUN_SUCCEEDED && (on & NOTIFY_BIT(NOTIFY_RECOVERED)) != 0)
        db_run_previous_status(notify->cfg.db, run, &previous);
    notice->event =
        notify_event_for(on, run->status,
                         previous >= 0 && (previous == RUN_FAILED || previous == RUN_FENCED ||
                                           previous == RUN_MISSED || previous == RUN_LOST));
    if (notice->event == NOTIFY_NONE)
        goto out;
    if (format == NOTIFY_FORMAT_SLACK) {
        char text[1024];

        notify_slack_text(notice->event, run, text, sizeof(text));
        doc = json_pack("{s:s}", "text", text);
    } else {
        char type[32];

        snprintf(type, sizeof(type), "run.%s", notify_event_name(notice->event));
        doc = json_pack("{s:s, s:s, s:o}", "type", type, "job", run->job, "run", run_to_json(run));
    }
    notice->body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    notice->url = cf_strdup(url);
    notice->host = notify_url_host(url);
    /* Signed like a delivery of the job, with the secrets valid now; never unsigned. */
    pthread_mutex_lock(&notify->coord_lock);
    notice->secret_count =
        notify->secrets != NULL
            ? signing_secrets_for_job(notify->secrets, job, cf_wall_ms(), notice->secrets)
            : 0;
    pthread_mutex_unlock(&notify->coord_lock);
    if (notice->secret_count == 0)
        log_warn("notification not sent: no signing secret known", "job=%s run=%s", run->job,
                 run->id);
    ok = notice->body != NULL && notice->url != NULL && notice->host != NULL &&
         notice->secret_count > 0;
out:
    json_decref(doc);
    job_free(job);
    return ok;
}

/* What the connect-time check needs of one attempt. */
struct notify_connect {
    const struct netallow *allow;
    const char *host;
};

/* Refuses a connection to an address --webhook-allow does not allow (as delivery.c does). */
static curl_socket_t notify_open_socket(void *clientp, curlsocktype purpose,
                                        struct curl_sockaddr *address)
{
    const struct notify_connect *connect = clientp;
    (void)purpose;

    if (!netallow_address_allowed(connect->allow, &address->addr,
                                  netallow_names_host(connect->allow, connect->host)))
        return CURL_SOCKET_BAD;
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static size_t notify_discard(char *data, size_t size, size_t nmemb, void *userdata)
{
    (void)data;
    (void)userdata;
    return size * nmemb;
}

/* Appends a formatted header; false when out of memory. */
static bool notify_header(struct curl_slist **list, const char *name, const char *value)
{
    char line[1024];
    struct curl_slist *grown;

    snprintf(line, sizeof(line), "%s: %s", name, value);
    grown = curl_slist_append(*list, line);
    if (grown == NULL)
        return false;
    *list = grown;
    return true;
}

/*
 * Sends one attempt of notice. Returns the HTTP status (0 when none came),
 * with the failure in error (len bytes).
 */
static long notice_send(struct notify *notify, const struct notice *notice, char *error, size_t len)
{
    const struct run *run = &notice->run;
    char token[24], key[JOB_NAME_MAX + RUN_ID_MAX + 16], type[32], now[24];
    char signature[SIGNATURE_HEADER_LEN], webhook_signature[SIGNATURE_WEBHOOK_HEADER_LEN];
    char curl_error[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    size_t body_len = strlen(notice->body);
    int64_t now_s = cf_wall_ms() / 1000;
    CURL *easy = curl_easy_init();
    struct notify_connect connect = {notify->cfg.allow, notice->host};
    long status = 0;
    bool ok;
    CURLcode code;

    snprintf(token, sizeof(token), "%" PRId64, run->fencing_token);
    snprintf(key, sizeof(key), "%s@notify-%s", run->job, run->id);
    snprintf(type, sizeof(type), "run.%s", notify_event_name(notice->event));
    snprintf(now, sizeof(now), "%" PRId64, now_s);
    ok = easy != NULL && notify_header(&headers, "Content-Type", "application/json") &&
         notify_header(&headers, "User-Agent", "cronfence/" CF_VERSION) &&
         notify_header(&headers, "Cronfence-Event", type) &&
         notify_header(&headers, "Cronfence-Job", run->job) &&
         notify_header(&headers, "Cronfence-Run", run->id) &&
         notify_header(&headers, "Fencing-Token", token) &&
         notify_header(&headers, "Idempotency-Key", key) && notify_header(&headers, "Expect", "");
    if (ok) {
        const char *secrets[SIGNATURE_SECRETS_MAX];

        for (size_t i = 0; i < notice->secret_count; i++)
            secrets[i] = notice->secrets[i];
        ok = signature_header(secrets, notice->secret_count, now_s, run->job, token, key,
                              notice->body, body_len, signature) == CF_OK &&
             signature_webhook_header(secrets, notice->secret_count, key, now_s, notice->body,
                                      body_len, webhook_signature) == CF_OK &&
             notify_header(&headers, "Cronfence-Signature", signature) &&
             notify_header(&headers, "webhook-id", key) &&
             notify_header(&headers, "webhook-timestamp", now) &&
             notify_header(&headers, "webhook-signature", webhook_signature);
    }
    if (!ok) {
        snprintf(error, len, "out of memory");
        goto out;
    }
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)NOTIFY_TIMEOUT_MS);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, notify_open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, &connect);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, notify_discard);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, notice->body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    if (curl_easy_setopt(easy, CURLOPT_URL, notice->url) != CURLE_OK ||
        curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK) {
        snprintf(error, len, "cannot set up the request");
        goto out;
    }
    code = curl_easy_perform(easy);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (code != CURLE_OK)
        snprintf(error, len, "%s", curl_error[0] != '\0' ? curl_error : curl_easy_strerror(code));
    else if (status < 200 || status > 299)
        snprintf(error, len, "http status %ld", status);
out:
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return status;
}

/* Takes the first due notice off the queue (lock held), or NULL; *next_ms: the soonest wait. */
static struct notice *take_due(struct notify *notify, int64_t *wait_ms)
{
    int64_t now = cf_boot_ms();

    *wait_ms = 1000;
    for (struct notice **link = &notify->queue; *link != NULL; link = &(*link)->next) {
        struct notice *notice = *link;

        if (notice->due_boot_ms <= now) {
            *link = notice->next;
            notify->queued--;
            return notice;
        }
        if (notice->due_boot_ms - now < *wait_ms)
            *wait_ms = notice->due_boot_ms - now;
    }
    return NULL;
}

/* Handles one due notice (consumed): prepares it the first time, sends, queues a retry. */
static void notice_handle(struct notify *notify, struct notice *notice)
{
    char error[CURL_ERROR_SIZE + 64] = "";
    long status;

    if (notice->body == NULL && !notice_prepare(notify, notice)) {
        notice_free(notice);
        return;
    }
    status = notice_send(notify, notice, error, sizeof(error));
    notice->attempts++;
    if (status >= 200 && status <= 299) {
        log_info("notification sent", "job=%s run=%s event=%s attempts=%d", notice->run.job,
                 notice->run.id, notify_event_name(notice->event), notice->attempts);
        notice_free(notice);
        return;
    }
    if (notice->attempts >= NOTIFY_ATTEMPTS) {
        log_warn("notification failed", "job=%s run=%s event=%s attempts=%d error=\"%s\"",
                 notice->run.job, notice->run.id, notify_event_name(notice->event),
                 notice->attempts, error);
        notice_free(notice);
        return;
    }
    notice->due_boot_ms = cf_boot_ms() + ((int64_t)NOTIFY_BACKOFF_MS << (notice->attempts - 1));
    pthread_mutex_lock(&notify->lock);
    notice->next = notify->queue;
    notify->queue = notice;
    notify->queued++;
    pthread_mutex_unlock(&notify->lock);
}

static void *notify_main(void *arg)
{
    struct notify *notify = arg;

    pthread_mutex_lock(&notify->lock);
    while (!notify->stopping) {
        int64_t wait_ms;
        struct notice *notice = take_due(notify, &wait_ms);
        struct timespec ts;

        if (notice != NULL) {
            pthread_mutex_unlock(&notify->lock);
            notice_handle(notify, notice);
            pthread_mutex_lock(&notify->lock);
            continue;
        }
        cf_monotonic_deadline(wait_ms, &ts);
        pthread_cond_timedwait(&notify->wake, &notify->lock, &ts);
    }
    pthread_mutex_unlock(&notify->lock);
    return NULL;
}

int notify_start(const struct notify_config *cfg, struct notify **out)
{
    struct notify *notify = calloc(1, sizeof(*notify));

    *out = NULL;
    if (notify == NULL)
        return CF_ERR_NOMEM;
    notify->cfg = *cfg;
    pthread_mutex_init(&notify->lock, NULL);
    pthread_mutex_init(&notify->coord_lock, NULL);
    cf_monotonic_cond_init(&notify->wake);
    if (pthread_create(&notify->thread, NULL, notify_main, notify) != 0) {
        pthread_cond_destroy(&notify->wake);
        pthread_mutex_destroy(&notify->lock);
        pthread_mutex_destroy(&notify->coord_lock);
        free(notify);
        return CF_ERR_IO;
    }
    *out = notify;
    return CF_OK;
}

void notify_set_coord(struct notify *notify, struct coord *coord)
{
    if (notify == NULL)
        return;
    pthread_mutex_lock(&notify->coord_lock);
    notify->coord = coord;
    pthread_mutex_unlock(&notify->coord_lock);
}

void notify_set_secrets(struct notify *notify, struct signing_secrets *secrets)
{
    if (notify == NULL)
        return;
    pthread_mutex_lock(&notify->coord_lock);
    notify->secrets = secrets;
    pthread_mutex_unlock(&notify->coord_lock);
}

void notify_stop(struct notify *notify)
{
    if (notify == NULL)
        return;
    pthread_mutex_lock(&notify->lock);
    notify->stopping = true;
    pthread_cond_signal(&notify->wake);
    pthread_mutex_unlock(&notify->lock);
    pthread_join(notify->thread, NULL);
    while (notify->queue != NULL) {
        struct notice *next = notify->queue->next;

        notice_free(notify->queue);
        notify->queue = next;
    }
    pthread_cond_destroy(&notify->wake);
    pthread_mutex_destroy(&notify->lock);
    pthread_mutex_destroy(&notify->coord_lock);
    free(notify);
}

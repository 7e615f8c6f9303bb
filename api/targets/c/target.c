/*
 * target.c - an example cronfence webhook target: C with libmicrohttpd,
 * jansson and OpenSSL's libcrypto, nothing else.
 *
 *   cc -O2 -Wall -Wextra -o target target.c \
 *       $(pkg-config --cflags --libs libmicrohttpd jansson libcrypto)
 *   CRONFENCE_SECRET=... ./target PORT EFFECTS_FILE
 *
 * (or PORT and EFFECTS_FILE in the environment; port 0 picks a free one,
 * printed as "listening on 127.0.0.1:PORT"). The contract is DESIGN §5:
 *
 *   1. Verify Cronfence-Signature, t=<unix seconds>,v2=<hex>, where
 *      v2 = hex(HMAC-SHA256(secret, t + "\n" + Cronfence-Job + "\n" +
 *      Fencing-Token + "\n" + Idempotency-Key + "\n" + raw body)), and
 *      refuse a t more than 5 minutes old (or ahead): 401. (A Standard
 *      Webhooks library could check webhook-signature instead, given
 *      "whsec_" + base64(secret).)
 *   2. Check that the Idempotency-Key starts with "<Cronfence-Job>@" and that
 *      the body's "job", when it has one, is Cronfence-Job: 400 otherwise.
 *      The key of a scheduled firing is "<job>@<instant>", of a manual run
 *      "<job>@manual-<run id>"; a delivery of one job replayed as another's
 *      fails here or at the signature.
 *   3. Together with the effect: a seen Idempotency-Key gets 200 and nothing
 *      is done again; a fencing token lower than the highest in its fence
 *      scope gets 409; otherwise do the work and remember the key and the
 *      token.
 *
 * The fence scope is the Cronfence-Fence-Scope header. "job" (overlap forbid
 * or queue; also what a delivery without the header means): keep the highest
 * token per job. "slot" (overlap allow, whose slots may overlap and arrive out
 * of token order): keep it per Idempotency-Key, so a new key is accepted even
 * below the job's highest. The header is not signed: a job once accepted with
 * scope "job" stays "job", whatever a later delivery says.
 *
 * The "work" here is appending a JSON line {job, token, key, run_id} to
 * EFFECTS_FILE. server/receiver.c is the complete version, kept in SQLite.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_AGE_S 300 /* oldest (or most future) signature t accepted */
#define MAX_BODY_BYTES (1024 * 1024)

/*
 * The accepted deliveries, newest first: a job's highest token is the largest
 * token among its entries (whatever their scope), its seen keys are their
 * keys, and its scope is "job" once one entry was accepted so. In memory for
 * the example, so a restart forgets them: a real target must store them in
 * its database in the same transaction as its effect (else a crash between
 * the effect and the bookkeeping lets a retry run the effect twice). The daemon
 * serves one request at a time, so a check and its record cannot interleave.
 */
struct accepted {
    char *job, *key;
    int64_t token;
    bool job_scope; /* accepted with fence scope "job" */
    struct accepted *next;
};

static struct accepted *accepted;
static const char *secret;
static FILE *effects;

/* One request: allocated on the first callback, freed in on_completed(). */
struct request {
    char *body; /* the raw bytes, not NUL-terminated: the MAC is over them */
    size_t len;
    bool too_large;
};

/* Parses 1 to 19 decimal digits, at most INT64_MAX (tokens go that high), into *out. */
static bool parse_int64(const char *text, int64_t *out)
{
    size_t len = strlen(text);
    int64_t value = 0;

    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)text[i]) || value > (INT64_MAX - (text[i] - '0')) / 10)
            return false;
        value = value * 10 + (text[i] - '0');
    }
    *out = value;
    return len > 0;
}

/* Decodes 64 hex digits (either case) into mac; false on anything else. */
static bool parse_hex_mac(const char *text, size_t len, unsigned char mac[32])
{
    if (len != 64)
        return false;
    for (size_t i = 0; i < 64; i++) {
        char c = (char)tolower((unsigned char)text[i]);
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

        if (digit < 0)
            return false;
        mac[i / 2] = (unsigned char)(i % 2 == 0 ? digit << 4 : mac[i / 2] | digit);
    }
    return true;
}

/*
 * True when header is comma-separated items with exactly one fresh
 * "t=<unix seconds>" and at least one "v2=<64 hex>" (one per secret while
 * cronfence rotates its secret), and one v2 is our HMAC. Every v2 is compared
 * in constant time; items of other schemes (the retired v1) are ignored.
 */
static bool signature_ok(const char *header, const char *job, const char *token,
                         const char *key, const char *body, size_t body_len)
{
    unsigned char want[EVP_MAX_MD_SIZE], got[32];
    unsigned int want_len = 0;
    char t_text[20] = "", *message;
    const char *item = header;
    size_t prefix_len, t_count = 0, v2_count = 0;
    bool matched = false;
    int64_t t;

    /* First the items: t, and whether the header is well formed. */
    for (;;) {
        size_t len = strcspn(item, ",");

        if (len > 2 && strncmp(item, "t=", 2) == 0 && len - 2 < sizeof(t_text)) {
            memcpy(t_text, item + 2, len - 2);
            t_text[len - 2] = '\0';
            t_count++;
        } else if (strncmp(item, "v2=", 3) == 0) {
            if (!parse_hex_mac(item + 3, len - 3, got))
                return false;
            v2_count++;
        } else if (memchr(item, '=', len) == NULL) {
            return false;
        }
        if (item[len] == '\0')
            break;
        item += len + 1;
    }
    if (t_count != 1 || v2_count == 0 || !parse_int64(t_text, &t) ||
        llabs((long long)(time(NULL) - t)) > MAX_AGE_S)
        return false;

    prefix_len = strlen(t_text) + strlen(job) + strlen(token) + strlen(key) + 4;
    message = malloc(prefix_len + body_len + 1);
    if (message == NULL)
        return false;
    snprintf(message, prefix_len + 1, "%s\n%s\n%s\n%s\n", t_text, job, token, key);
    if (body_len > 0)
        memcpy(message + prefix_len, body, body_len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)message, prefix_len + body_len,
         want, &want_len);
    free(message);
    if (want_len != 32)
        return false;

    /* Then every v2 against ours, with no early exit. */
    for (item = header;; item += strcspn(item, ",") + 1) {
        if (strncmp(item, "v2=", 3) == 0 && parse_hex_mac(item + 3, strcspn(item + 3, ","), got) &&
            CRYPTO_memcmp(got, want, 32) == 0)
            matched = true;
        if (item[strcspn(item, ",")] == '\0')
            break;
    }
    return matched;
}

/*
 * True when the body names no job (it is not a JSON object with a "job"
 * member: a raw body) or names job.
 */
static bool body_job_ok(const char *body, size_t body_len, const char *job)
{
    json_t *doc = json_loadb(body != NULL ? body : "", body_len, 0, NULL);
    json_t *named = json_object_get(doc, "job");
    bool ok = named == NULL || (json_is_string(named) && strcmp(json_string_value(named), job) == 0);

    json_decref(doc);
    return ok;
}

/* Writes s as a JSON string; every byte that needs it is written as \u00XX. */
static void write_json_string(const char *s)
{
    fputc('"', effects);
    for (; s != NULL && *s != '\0'; s++) {
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            fprintf(effects, "\\u%04x", (unsigned int)*s);
        else
            fputc(*s, effects);
    }
    fputc('"', effects);
}

/* The effect: one JSON line in EFFECTS_FILE. Returns false when it was not written. */
static bool append_effect(const char *job, int64_t token, const char *key, const char *run_id)
{
    fputs("{\"job\":", effects);
    write_json_string(job);
    fprintf(effects, ",\"token\":%" PRId64 ",\"key\":", token);
    write_json_string(key);
    fputs(",\"run_id\":", effects);
    write_json_string(run_id);
    return fputs("}\n", effects) != EOF && fflush(effects) == 0;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned int status, const char *json)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (response == NULL)
        return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    ret = MHD_queue_response(conn, status, response);
    MHD_destroy_response(response);
    return ret;
}

static const char *header(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* Handles a complete request of any method and path: the job chooses them. */
static enum MHD_Result handle_delivery(struct MHD_Connection *conn, const struct request *req)
{
    const char *signature = header(conn, "Cronfence-Signature");
    const char *token_text = header(conn, "Fencing-Token");
    const char *key = header(conn, "Idempotency-Key");
    const char *job = header(conn, "Cronfence-Job");
    const char *scope = header(conn, "Cronfence-Fence-Scope");
    const char *at;
    struct accepted *entry;
    int64_t token, highest = -1;
    bool job_scope;
    char json[80];

    if (req->too_large)
        return answer(conn, 413, "{\"status\":\"error\",\"error\":\"body too large\"}");
    if (signature == NULL || token_text == NULL || key == NULL || job == NULL ||
        !signature_ok(signature, job, token_text, key, req->body, req->len))
        return answer(conn, 401, "{\"status\":\"error\",\"error\":\"bad signature\"}");
    if (!parse_int64(token_text, &token))
        return answer(conn, 400, "{\"status\":\"error\",\"error\":\"bad fencing token\"}");
    /* Every key, scheduled or manual, is "<job>@...", and the body names the
     * job too: all three must agree, or a replay could take another job's key
     * or raise its highest token. */
    at = strchr(key, '@');
    if (at == NULL || strlen(job) != (size_t)(at - key) ||
        strncmp(job, key, (size_t)(at - key)) != 0 || !body_job_ok(req->body, req->len, job))
        return answer(conn, 400, "{\"status\":\"error\",\"error\":\"bad cronfence-job\"}");
    /* No header: a delivery from before it, fenced per job. */
    if (scope != NULL && strcmp(scope, "job") != 0 && strcmp(scope, "slot") != 0)
        return answer(conn, 400, "{\"status\":\"error\",\"error\":\"bad cronfence-fence-scope\"}");
    job_scope = scope == NULL || strcmp(scope, "job") == 0;

    for (entry = accepted; entry != NULL; entry = entry->next) {
        if (strcmp(entry->job, job) != 0)
            continue;
        if (strcmp(entry->key, key) == 0)
            return answer(conn, 200, "{\"status\":\"duplicate\"}");
        if (entry->token > highest)
            highest = entry->token;
        job_scope = job_scope || entry->job_scope; /* never downgraded by the unsigned header */
    }
    /* >= and not >: an equal token comes from the same claim as the highest (a
     * retry of that firing, whose key you may have pruned). Fencing refuses
     * only an older lock holder, one whose token is lower. For scope "slot"
     * the highest is the key's, and a seen key is a repeat (above): a new key
     * is accepted whatever other slots accepted. */
    if (job_scope && token < highest) {
        snprintf(json, sizeof(json), "{\"status\":\"stale\",\"highest\":%" PRId64 "}", highest);
        return answer(conn, 409, json);
    }
    /* The record is made first, so that once the effect is done, keeping it cannot fail. */
    entry = calloc(1, sizeof(*entry));
    if (entry != NULL) {
        entry->job = strdup(job);
        entry->key = strdup(key);
        entry->token = token;
        entry->job_scope = job_scope;
    }
    if (entry == NULL || entry->job == NULL || entry->key == NULL ||
        !append_effect(job, token, key, header(conn, "Cronfence-Run"))) {
        if (entry != NULL) {
            free(entry->job);
            free(entry->key);
        }
        free(entry);
        return answer(conn, 500, "{\"status\":\"error\",\"error\":\"internal error\"}");
    }
    entry->next = accepted;
    accepted = entry;
    return answer(conn, 200, "{\"status\":\"accepted\"}");
}

/* MHD calls this with the headers, with each piece of the body, then with no data. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct request *req = *req_cls;
    size_t size = *upload_data_size;

    (void)cls, (void)url, (void)method, (void)version;
    if (req == NULL) { /* the headers; the body's pieces and a last call follow */
        *req_cls = calloc(1, sizeof(*req));
        return *req_cls != NULL ? MHD_YES : MHD_NO;
    }
    if (size == 0)
        return handle_delivery(conn, req);
    if (size > MAX_BODY_BYTES - req->len)
        req->too_large = true;
    if (!req->too_large) {
        char *grown = realloc(req->body, req->len + size);

        if (grown == NULL)
            return MHD_NO;
        memcpy(grown + req->len, upload_data, size);
        req->body = grown;
        req->len += size;
    }
    *upload_data_size = 0;
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode why)
{
    struct request *req = *req_cls;

    (void)cls, (void)conn, (void)why;
    if (req != NULL)
        free(req->body);
    free(req);
}

int main(int argc, char **argv)
{
    const char *port_text = argc > 1 ? argv[1] : getenv("PORT");
    const char *effects_path = argc > 2 ? argv[2] : getenv("EFFECTS_FILE");
    struct sockaddr_in loopback = {.sin_family = AF_INET,
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct MHD_Daemon *daemon;
    int64_t port;
    sigset_t stop;
    int sig;

    secret = getenv("CRONFENCE_SECRET");
    /* An empty secret would let anyone sign. */
    if (secret == NULL || secret[0] == '\0' || port_text == NULL || effects_path == NULL ||
        !parse_int64(port_text, &port) || port > 65535) {
        fputs("usage: CRONFENCE_SECRET=... target PORT EFFECTS_FILE\n", stderr);
        return 2;
    }
    effects = fopen(effects_path, "a");
    if (effects == NULL) {
        perror(effects_path);
        return 1;
    }
    /* Blocked before MHD starts its thread, so that only sigwait() takes them. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    loopback.sin_port = htons((uint16_t)port);
    daemon = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                              on_request, NULL, MHD_OPTION_SOCK_ADDR, &loopback,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (daemon == NULL) {
        fprintf(stderr, "cannot listen on 127.0.0.1:%s\n", port_text);
        return 1;
    }
    printf("listening on 127.0.0.1:%u\n",
           (unsigned int)MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT)->port);
    fflush(stdout);
    sigwait(&stop, &sig);
    MHD_stop_daemon(daemon);
    fclose(effects);
    return 0;
}

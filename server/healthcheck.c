/*
 * healthcheck.c - the container health check (see healthcheck.h).
 */
#include "healthcheck.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "http.h"

#define HEALTHCHECK_TIMEOUT_MS 3000L
#define CMDLINE_MAX 65536

/*
 * The arguments of process 1 after its program name, when process 1 is
 * another cronfence (in a container); *count is 0 otherwise. On success the
 * strings point into *storage, which the caller frees (with *args).
 */
static char **process_one_args(int *count, char **storage)
{
    FILE *f;
    size_t len;
    char *buf, **args = NULL;
    const char *name;
    int n = 0;

    *count = 0;
    *storage = NULL;
    if (getpid() == 1)
        return NULL;
    f = fopen("/proc/1/cmdline", "rb");
    if (f == NULL)
        return NULL;
    buf = malloc(CMDLINE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    len = fread(buf, 1, CMDLINE_MAX, f);
    fclose(f);
    buf[len] = '\0';
    name = strrchr(buf, '/') != NULL ? strrchr(buf, '/') + 1 : buf;
    if (len == 0 || strcmp(name, "cronfence") != 0)
        goto out_free_buf;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\0';
    args = calloc((size_t)n + 1, sizeof(*args));
    if (args == NULL)
        goto out_free_buf;
    n = 0;
    for (size_t i = strlen(buf) + 1; i < len; i += strlen(buf + i) + 1)
        args[n++] = buf + i;
    *count = n;
    *storage = buf;
    return args;
out_free_buf:
    free(buf);
    return NULL;
}

static size_t discard(char *data, size_t size, size_t count, void *ctx)
{
    return size * count;
}

int healthcheck_main(int argc, char **argv)
{
    struct config cfg = {0};
    enum config_action action;
    char err[512] = "", host[128], url[256], *storage = NULL, **pid1_args, **args = NULL;
    int pid1_count, count = 0, status = 1;
    uint16_t port;
    long code = 0;
    CURL *curl = NULL;
    CURLcode res;

    /* argv[0] stands in for the program name config_parse() skips. */
    pid1_args = process_one_args(&pid1_count, &storage);
    args = calloc((size_t)pid1_count + (size_t)argc + 1, sizeof(*args));
    if (args == NULL) {
        fprintf(stderr, "cronfence: out of memory\n");
        goto out;
    }
    args[count++] = argv[0];
    for (int i = 0; i < pid1_count; i++)
        args[count++] = pid1_args[i];
    for (int i = 1; i < argc; i++)
        args[count++] = argv[i];
    if (config_parse(count, args, &cfg, &action, err, sizeof(err)) != CF_OK ||
        http_parse_listen(cfg.listen, host, sizeof(host), &port) != CF_OK) {
        fprintf(stderr, "cronfence: %s\n", err[0] != '\0' ? err : "invalid --listen");
        status = 2;
        goto out;
    }
    if (strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "::1");
    snprintf(url, sizeof(url), "http://%s%s%s:%u/healthz", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", port);
    curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "cronfence: cannot start libcurl\n");
        goto out;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, HEALTHCHECK_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    res = curl_easy_perform(curl);
    if (res == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (res != CURLE_OK)
        fprintf(stderr, "unhealthy: %s: %s\n", url, curl_easy_strerror(res));
    else if (code != 200)
        fprintf(stderr, "unhealthy: %s answered %ld\n", url, code);
    else
        status = 0;
out:
    curl_easy_cleanup(curl);
    config_release(&cfg);
    free(args);
    free(pid1_args);
    free(storage);
    return status;
}

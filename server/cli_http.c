/*
 * cli_http.c - the command-line client's HTTP exchanges (see cli_http.h).
 */
#include "cli_http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "http_parse.h"

/* Answers larger than this are refused rather than buffered: 64 MiB. */
#define CLI_MAX_RESPONSE_BYTES ((size_t)64 * 1024 * 1024)

/* The response body, capped at CLI_MAX_RESPONSE_BYTES with its NUL. */
struct body_buffer {
    struct http_body body;
    bool too_large;
};

static size_t on_body(char *chunk, size_t size, size_t count, void *userdata)
{
    struct body_buffer *buffer = userdata;
    size_t len = size * count;
    int ret = http_body_append(&buffer->body, chunk, len);

    buffer->too_large = ret == CF_ERR_TOO_LARGE;
    return ret == CF_OK ? len : 0;
}

/* Copies the headers the client reads (ETag, Cronfence-Access) into the response. */
static size_t on_header(char *line, size_t size, size_t count, void *userdata)
{
    struct cli_response *res = userdata;
    size_t len = size * count;
    const char *value;
    size_t value_len;

    value = memchr(line, ':', len);
    if (value == NULL)
        return len;
    value++;
    while (value < line + len && *value == ' ')
        value++;
    value_len = (size_t)(line + len - value);
    while (value_len > 0 && (value[value_len - 1] == '\r' || value[value_len - 1] == '\n'))
        value_len--;
    if (strncasecmp(line, "ETag:", 5) == 0 && value_len < sizeof(res->etag)) {
        memcpy(res->etag, value, value_len);
        res->etag[value_len] = '\0';
    } else if (strncasecmp(line, "Cronfence-Access:", 17) == 0) {
        res->viewer = value_len == 6 && strncmp(value, "viewer", 6) == 0;
    }
    return len;
}

int cli_http_request(const struct cli_server *server, const char *method, const char *path,
                     const json_t *body, const char *if_match, struct cli_response *res, char *err,
                     size_t errlen)
{
    struct body_buffer buffer = {0};
    struct curl_slist *headers = NULL;
    char *url = NULL, *payload = NULL, *line = NULL;
    CURL *easy = NULL;
    CURLcode code;
    int ret = CF_ERR_NOMEM;

    memset(res, 0, sizeof(*res));
    http_body_begin(&buffer.body, -1, CLI_MAX_RESPONSE_BYTES - 1);
    easy = curl_easy_init();
    if (easy == NULL)
        goto out;
    if (asprintf(&url, "%s%s", server->url, path) < 0) {
        url = NULL;
        goto out;
    }
    headers = curl_slist_append(headers, "Accept: application/json");
    if (server->token != NULL) {
        if (asprintf(&line, "Authorization: Bearer %s", server->token) < 0) {
            line = NULL;
            goto out;
        }
        headers = curl_slist_append(headers, line);
    }
    if (if_match != NULL) {
        free(line);
        if (asprintf(&line, "If-Match: %s", if_match) < 0) {
            line = NULL;
            goto out;
        }
        headers = curl_slist_append(headers, line);
    }
    if (body != NULL) {
        payload = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
        if (payload == NULL)
            goto out;
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
    } else if (strcmp(method, "POST") == 0) {
        /* A POST with no body still says so, or libcurl would wait to read one. */
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (headers == NULL)
        goto out;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "GET") == 0)
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "cronfence-cli/" CF_VERSION);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, server->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &buffer);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, res);
    code = curl_easy_perform(easy);
    if (code != CURLE_OK) {
        snprintf(err, errlen, "cannot reach %s: %s", server->url,
                 buffer.too_large ? "the answer is too large" : curl_easy_strerror(code));
        ret = CF_ERR_IO;
        goto out;
    }
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &res->status);
    if (buffer.body.len > 0)
        res->body = json_loadb(buffer.body.data, buffer.body.len, JSON_DECODE_ANY, NULL);
    ret = CF_OK;
out:
    if (ret == CF_ERR_NOMEM)
        snprintf(err, errlen, "out of memory");
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    http_body_release(&buffer.body);
    free(payload);
    free(line);
    free(url);
    return ret;
}

void cli_response_release(struct cli_response *res)
{
    json_decref(res->body);
    memset(res, 0, sizeof(*res));
}

void cli_http_print_problem(FILE *out, const struct cli_response *res)
{
    const char *detail = json_string_value(json_object_get(res->body, "detail"));
    const char *title = json_string_value(json_object_get(res->body, "title"));
    const json_t *entry;
    size_t i;

    fprintf(out, "error: %s (HTTP %ld)\n",
            detail  ? detail
            : title ? title
                    : "request refused",
            res->status);
    json_array_foreach(json_object_get(res->body, "errors"), i, entry)
    {
        const char *field = json_string_value(json_object_get(entry, "field"));
        const char *message = json_string_value(json_object_get(entry, "message"));

        fprintf(out, "  %s: %s\n", field && *field ? field : "(request)",
                message ? message : "is invalid");
    }
}

bool cli_http_escape(char *buffer, size_t cap, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(buffer);

    for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++) {
        bool plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                     (*c >= '0' && *c <= '9') || strchr("-._~", *c) != NULL;

        if (len + (plain ? 1 : 3) + 1 > cap)
            return false;
        if (plain) {
            buffer[len++] = (char)*c;
        } else {
            buffer[len++] = '%';
            buffer[len++] = hex[*c >> 4];
            buffer[len++] = hex[*c & 15];
        }
    }
    buffer[len] = '\0';
    return true;
}

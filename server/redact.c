/*
 * redact.c - masks a job's credentials for viewer tokens.
 */
#include "redact.h"

#include <stdlib.h>
#include <string.h>

char *redact_url(const char *url)
{
    const char *scheme_end = strstr(url, "://"), *authority, *at = NULL;
    size_t authority_len;
    char *out;

    if (scheme_end == NULL)
        return strdup(url);
    authority = scheme_end + 3;
    authority_len = strcspn(authority, "/?#");
    /* The userinfo ends at the last '@' of the authority (a password may hold '@'). */
    for (size_t i = 0; i < authority_len; i++)
        if (authority[i] == '@')
            at = authority + i;
    if (at == NULL)
        return strdup(url);
    out = malloc(strlen(url) + sizeof(REDACT_MASK));
    if (out == NULL)
        return NULL;
    memcpy(out, url, (size_t)(authority - url));
    strcpy(out + (authority - url), REDACT_MASK);
    strcat(out, at);
    return out;
}

int redact_job(json_t *doc)
{
    json_t *webhook = json_object_get(doc, "webhook");
    json_t *headers = json_object_get(webhook, "headers");
    json_t *url = json_object_get(webhook, "url");
    const char *name;
    json_t *value;

    if (json_is_object(headers)) {
        json_object_foreach(headers, name, value)
        {
            if (json_object_set_new(headers, name, json_string(REDACT_MASK)) != 0)
                return -1;
        }
    }
    if (json_is_string(url)) {
        char *masked = redact_url(json_string_value(url));

        if (masked == NULL || json_object_set_new(webhook, "url", json_string(masked)) != 0) {
            free(masked);
            return -1;
        }
        free(masked);
    }
    return 0;
}

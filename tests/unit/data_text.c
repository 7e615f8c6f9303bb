/*
 * data_text.c - reading the unit tests' data files (see data_text.h).
 */
#include "data_text.h"

#include <string.h>

static int is_trailing(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

char *data_trim(char *text)
{
    char *end;

    while (*text == ' ' || *text == '\t')
        text++;
    end = text + strlen(text);
    while (end > text && is_trailing(end[-1]))
        end--;
    *end = '\0';
    return text;
}

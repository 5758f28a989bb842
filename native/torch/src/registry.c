/* Reading the model registry (simai/models/registry.py) with libsimai: the latest pointer, a
 * version's format and bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* Just after the JSON string starting at p (a '"'), or NULL if it is not terminated. */
static const char *string_end(const char *p)
{
    for (p++; *p; p++) {
        if (*p == '\\') {
            if (!*++p)
                return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* The value text of member `key` of the top-level object of `json` (valid JSON, as libsimai
 * checked it), or NULL. Nested objects (metrics, kwargs) are skipped. */
static const char *member(const char *json, const char *key)
{
    size_t len = strlen(key);
    int depth = 0;
    const char *p = json;
    while (*p) {
        if (*p == '"') {
            const char *end = string_end(p), *after;
            if (end == NULL)
                return NULL;
            after = skip_space(end);
            if (depth == 1 && *after == ':' && (size_t)(end - p - 2) == len &&
                memcmp(p + 1, key, len) == 0)
                return skip_space(after + 1);
            p = end;
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    }
    return NULL;
}

int simai_torch_check_name(const char *name)
{
    if (name == NULL || *name == '\0')
        return simai_torch_fail(SIMAI_ERR_INVALID, "model name must be a non-empty string");
    if (strchr(name, '/'))
        return simai_torch_fail(SIMAI_ERR_INVALID, "model name '%s' must not contain '/'", name);
    if (strlen(name) > SIMAI_MAX_KEY_BYTES - 32)
        return simai_torch_fail(SIMAI_ERR_INVALID, "model name is too long for a key");
    return SIMAI_OK;
}

/* The JSON text under `key`, malloc'ed (grown until the value fits). */
static int get_json(simai_store *store, const char *key, char **text)
{
    size_t cap = 4096, n = 0;
    for (;;) {
        char *buf = malloc(cap);
        int rc;
        if (buf == NULL)
            return simai_torch_fail(SIMAI_ERR_NOMEM, "out of memory reading '%s'", key);
        rc = simai_get_json(store, key, buf, cap, &n);
        if (rc == SIMAI_OK) {
            *text = buf;
            return SIMAI_OK;
        }
        free(buf);
        if (rc != SIMAI_ERR_TOO_SMALL)
            return simai_torch_fail_simai(rc, "reading the model registry");
        cap = n + 1; /* overwritten by a larger pointer since: try again */
    }
}

int simai_torch_latest(simai_store *store, const char *name, int64_t *version,
                       int *torchscript)
{
    char key[SIMAI_MAX_KEY_BYTES + 1], *text = NULL, *end = NULL;
    const char *v, *format;
    int rc;
    snprintf(key, sizeof key, "models/%s/latest", name);
    if ((rc = get_json(store, key, &text)) != SIMAI_OK)
        return rc;
    v = member(text, "version");
    format = member(text, "format");
    *version = v ? strtoll(v, &end, 10) : 0;
    *torchscript = format && strncmp(format, "\"torchscript\"", 13) == 0;
    if (v == NULL || end == v || *version < 1)
        rc = simai_torch_fail(SIMAI_ERR_CORRUPT, "'%s' names no version: %.200s", key, text);
    free(text);
    return rc;
}

int simai_torch_read(simai_store *store, const char *name, int64_t version, char **data,
                     size_t *n)
{
    char key[SIMAI_MAX_KEY_BYTES + 1];
    simai_info info;
    int rc;
    snprintf(key, sizeof key, "models/%s/data/%010lld", name, (long long)version);
    if ((rc = simai_info_get(store, key, &info)) != SIMAI_OK)
        return simai_torch_fail_simai(rc, "model '%s' version %lld", name, (long long)version);
    if ((*data = malloc(info.nbytes ? info.nbytes : 1)) == NULL)
        return simai_torch_fail(SIMAI_ERR_NOMEM, "out of memory for model '%s' version %lld",
                                name, (long long)version);
    rc = simai_get_bytes(store, key, *data, info.nbytes, n);
    if (rc != SIMAI_OK) {
        free(*data);
        *data = NULL;
        return simai_torch_fail_simai(rc, "model '%s' version %lld", name, (long long)version);
    }
    return SIMAI_OK;
}

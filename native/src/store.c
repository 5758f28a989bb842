/* The store's public API for values: open (by URL scheme), put, get, views, exists, delete,
 * keys, wait. Arguments are checked here, once; the backend (backend.h) does the rest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"
#include "error.h"
#include "internal.h"
#include "text.h"

#define DEFAULT_URL "local://default"

const char *simai_version(void)
{
#define SIMAI_STR_(x) #x
#define SIMAI_STR(x) SIMAI_STR_(x)
    return SIMAI_STR(SIMAI_VERSION_MAJOR) "." SIMAI_STR(SIMAI_VERSION_MINOR) "." SIMAI_STR(
        SIMAI_VERSION_PATCH);
}

/* --- opening ------------------------------------------------------------------------------- */

int simai_open(simai_store **store)
{
    const char *url = getenv("SIMAI_STORE");
    return simai_open_url(url && *url ? url : DEFAULT_URL, store);
}

int simai_open_url(const char *url, simai_store **store)
{
    int (*open)(simai_store *);
    const char *sep;
    simai_store *s;
    size_t scheme;
    int rc;
    if (!store)
        return simai_fail(SIMAI_ERR_INVALID, "store must not be NULL");
    *store = NULL;
    if (!url || !(sep = strstr(url, "://")))
        return simai_fail(SIMAI_ERR_INVALID,
                          "store URL '%s' is not of the form scheme://...; use local://NAME, "
                          "file:///path, redis://host:port or rediss://host:port",
                          url ? url : "NULL");
    scheme = (size_t)(sep - url);
    if (scheme == 5 && !strncasecmp(url, "local", 5))
        open = simai_local_open;
    else if (scheme == 4 && !strncasecmp(url, "file", 4))
        open = simai_file_open;
    else if ((scheme == 5 && !strncasecmp(url, "redis", 5)) ||
             (scheme == 6 && !strncasecmp(url, "rediss", 6))) /* rediss: TLS */
        open = simai_redis_open;
    else
        return simai_fail(SIMAI_ERR_INVALID,
                          "unknown store scheme '%.*s' in '%s': use local, file or redis",
                          (int)scheme, url, url);
    if (!(s = calloc(1, sizeof *s + strlen(url) + 1 + SIMAI_URL_SPARE)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory opening a store");
    strcpy(s->url, url);
    if ((rc = open(s))) {
        free(s);
        return rc;
    }
    *store = s;
    return SIMAI_OK;
}

int simai_destroy(simai_store *s)
{
    int rc = simai_usable(s);
    if (rc)
        return rc;
    if (!s->ops->destroy)
        return simai_fail(SIMAI_ERR_UNSUPPORTED,
                          "%s cannot be destroyed from simai: Redis stores have no destroy "
                          "(Python's RedisStore has none either); delete its keys and streams, "
                          "or stop the server",
                          s->url);
    return s->ops->destroy(s);
}

int simai_close(simai_store *s)
{
    if (s) {
        s->ops->close(s);
        free(s);
    }
    return SIMAI_OK;
}

const char *simai_url(const simai_store *s)
{
    return s ? s->url : "";
}

int simai_usable(simai_store *s)
{
    if (!s)
        return simai_fail(SIMAI_ERR_INVALID, "store must not be NULL");
    return s->ops->usable(s);
}

/* --- writing ------------------------------------------------------------------------------- */

static int put(simai_store *s, const char *key, struct simai_head *h, const void *data, int flags)
{
    struct simai_src src = {data, flags & SIMAI_COLUMN_MAJOR};
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &n)))
        return rc;
    if (!data && h->nbytes)
        return simai_fail(SIMAI_ERR_INVALID, "data must not be NULL");
    return s->ops->put(s, key, n, h, &src);
}

int simai_put_bytes(simai_store *s, const char *key, const void *data, size_t n)
{
    struct simai_head h;
    simai_head_plain(&h, SIMAI_KIND_BYTES, n);
    return put(s, key, &h, data, 0);
}

int simai_put_json(simai_store *s, const char *key, const char *json)
{
    struct simai_head h;
    int rc;
    if (!json)
        return simai_fail(SIMAI_ERR_INVALID, "json must not be NULL");
    if ((rc = simai_check_json(json, strlen(json))))
        return rc;
    simai_head_plain(&h, SIMAI_KIND_JSON, strlen(json));
    return put(s, key, &h, json, 0);
}

int simai_put_array(simai_store *s, const char *key, const char *dtype, int ndim,
                    const uint64_t *shape, const void *data, int flags)
{
    struct simai_head h;
    int rc = simai_head_array(&h, dtype, ndim, shape);
    return rc ? rc : put(s, key, &h, data, flags);
}

/* --- reading ------------------------------------------------------------------------------- */

static int read_value(simai_store *s, const char *key, const struct simai_want *w,
                      simai_view **view, const void **data)
{
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &n)))
        return rc;
    if (!w->buf && w->cap)
        return simai_fail(SIMAI_ERR_INVALID, "buf is NULL but cap is %zu", w->cap);
    if (w->info) /* all zeros unless a header was read */
        memset(w->info, 0, sizeof *w->info);
    return s->ops->get(s, key, n, w, view, data);
}

int simai_info_get(simai_store *s, const char *key, simai_info *info)
{
    struct simai_want w = {.kind = -1, .head_only = 1, .info = info};
    if (!info)
        return simai_fail(SIMAI_ERR_INVALID, "info must not be NULL");
    return read_value(s, key, &w, NULL, NULL);
}

int simai_get(simai_store *s, const char *key, void *buf, size_t cap, simai_info *info)
{
    struct simai_want w = {.kind = -1, .buf = buf, .cap = cap, .info = info};
    return read_value(s, key, &w, NULL, NULL);
}

int simai_get_bytes(simai_store *s, const char *key, void *buf, size_t cap, size_t *n)
{
    struct simai_want w = {.kind = SIMAI_KIND_BYTES, .buf = buf, .cap = cap, .n = n};
    return read_value(s, key, &w, NULL, NULL);
}

int simai_get_json(simai_store *s, const char *key, char *buf, size_t cap, size_t *n)
{
    struct simai_want w = {.kind = SIMAI_KIND_JSON, .buf = buf, .cap = cap, .nul = 1, .n = n};
    return read_value(s, key, &w, NULL, NULL);
}

int simai_get_array(simai_store *s, const char *key, const char *dtype, int ndim,
                    const uint64_t *shape, void *buf, int flags)
{
    struct simai_want w;
    int rc = simai_want_array(&w, dtype, ndim, shape, buf, flags);
    return rc ? rc : read_value(s, key, &w, NULL, NULL);
}

int simai_get_alloc(simai_store *s, const char *key, void **data, simai_info *info)
{
    struct simai_want w = {.kind = -1, .info = info, .alloc = data};
    if (!data)
        return simai_fail(SIMAI_ERR_INVALID, "data must not be NULL");
    *data = NULL;
    return read_value(s, key, &w, NULL, NULL);
}

void simai_free(void *data)
{
    simai_alloc_free(data);
}

int simai_view_get(simai_store *s, const char *key, simai_view **view, const void **data,
                   simai_info *info)
{
    struct simai_want w = {.kind = -1, .view = 1, .info = info};
    if (!view || !data)
        return simai_fail(SIMAI_ERR_INVALID, "view and data must not be NULL");
    *view = NULL;
    *data = NULL;
    return read_value(s, key, &w, view, data);
}

int simai_view_release(simai_view *view)
{
    if (view) {
        if (view->txn) {
            mdb_txn_abort(view->txn);
            simai_env_release(view->env);
        }
        free(view->owned);
        free(view);
    }
    return SIMAI_OK;
}

int simai_exists(simai_store *s, const char *key, int *exists)
{
    size_t n;
    int rc = simai_usable(s);
    if (!exists)
        return simai_fail(SIMAI_ERR_INVALID, "exists must not be NULL");
    *exists = 0;
    if (rc || (rc = simai_check_key(key, "key", &n)))
        return rc;
    return s->ops->exists(s, key, n, exists);
}

/* --- deleting and listing ------------------------------------------------------------------ */

int simai_delete(simai_store *s, const char *key, int *existed)
{
    int was = 0;
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &n)))
        return rc;
    rc = s->ops->del(s, key, n, &was);
    if (existed)
        *existed = was;
    return rc;
}

int simai_keylist_add(struct simai_keylist *l, const void *name, size_t n)
{
    char *copy;
    if (l->count == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **grown = realloc(l->keys, cap * sizeof *grown);
        if (!grown)
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory listing keys");
        l->keys = grown;
        l->cap = cap;
    }
    if (!(copy = malloc(n + 1)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory listing keys");
    memcpy(copy, name, n);
    copy[n] = 0;
    l->keys[l->count++] = copy;
    return SIMAI_OK;
}

static int by_bytes(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int simai_keys(simai_store *s, const char *prefix, char ***keys, size_t *count)
{
    struct simai_keylist l = {NULL, 0, 0};
    int rc = simai_usable(s);
    if (rc)
        return rc;
    if (!keys || !count)
        return simai_fail(SIMAI_ERR_INVALID, "keys and count must not be NULL");
    *keys = NULL;
    *count = 0;
    if ((rc = s->ops->keys(s, prefix ? prefix : "", &l))) {
        simai_free_keys(l.keys, l.count);
        return rc;
    }
    qsort(l.keys, l.count, sizeof *l.keys, by_bytes);
    *keys = l.keys;
    *count = l.count;
    return SIMAI_OK;
}

void simai_free_keys(char **keys, size_t count)
{
    for (size_t i = 0; keys && i < count; i++)
        free(keys[i]);
    free(keys);
}

/* --- waiting ------------------------------------------------------------------------------- */

int simai_appeared(void *arg)
{
    struct simai_lookup *q = arg;
    int exists = 0, rc = q->s->ops->exists(q->s, q->key, q->n, &exists);
    return rc ? rc : exists ? SIMAI_OK : SIMAI_WAIT_AGAIN;
}

int simai_wait(simai_store *s, const char *key, double timeout)
{
    double deadline;
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &n)) || (rc = simai_deadline(timeout, &deadline)))
        return rc;
    rc = s->ops->wait(s, key, n, deadline);
    if (rc == SIMAI_ERR_TIMEOUT)
        simai_fail(rc, "key '%s' did not appear within %.3g s in %s", key, timeout, s->url);
    return rc;
}

/* The store's values: open, put, get, views, exists, delete, keys, wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "entry.h"
#include "error.h"
#include "internal.h"
#include "paths.h"
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
    const char *sep;
    char root[PATH_MAX];
    simai_store *s;
    size_t scheme;
    int rc;
    if (!store)
        return simai_fail(SIMAI_ERR_INVALID, "store must not be NULL");
    *store = NULL;
    if (!url || !(sep = strstr(url, "://")))
        return simai_fail(SIMAI_ERR_INVALID,
                          "store URL '%s' is not of the form scheme://...; use local://NAME, "
                          "file:///path or redis://host:port",
                          url ? url : "NULL");
    scheme = (size_t)(sep - url);
    if (scheme == 5 && !strncasecmp(url, "local", 5)) {
        /* below */
    } else if ((scheme == 4 && !strncasecmp(url, "file", 4)) ||
               (scheme == 5 && !strncasecmp(url, "redis", 5)) ||
               (scheme == 6 && !strncasecmp(url, "rediss", 6)))
        return simai_fail(SIMAI_ERR_UNSUPPORTED,
                          "store %s: this version of the C client opens node-local stores "
                          "(local://) only",
                          url);
    else
        return simai_fail(SIMAI_ERR_INVALID,
                          "unknown store scheme '%.*s' in '%s': use local, file or redis",
                          (int)scheme, url, url);
    if ((rc = simai_local_root(url, root, sizeof root)))
        return rc;
    if (!(s = malloc(sizeof *s + strlen(url) + 1)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory opening store %s", url);
    strcpy(s->url, url);
    if ((rc = simai_env_acquire(root, url, &s->env))) {
        free(s);
        return rc;
    }
    *store = s;
    return SIMAI_OK;
}

int simai_close(simai_store *s)
{
    if (s) {
        simai_env_release(s->env);
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
    return simai_env_check(s->env, s->url);
}

/* --- writing ------------------------------------------------------------------------------- */

struct put {
    const char *key;
    size_t n;
    struct simai_head *head;
    struct simai_src src;
    const char *url;
};

static int put_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct put *p = arg;
    struct simai_lkey k;
    int rc;
    simai_lkey_name(&k, 'v', p->key, p->n);
    if ((rc = simai_put_entry(txn, e, &k, p->head, &p->src, p->url)))
        return rc;
    if (k.b[1] == SIMAI_HASHED) { /* keep the long key's full name for keys() */
        MDB_val name = {k.n, k.b}, full = {p->n, (void *)p->key};
        k.b[0] = 'n';
        if ((rc = mdb_put(txn, e->meta, &name, &full, 0)))
            return simai_lmdb_fail(rc, p->url, "writing");
    }
    return SIMAI_OK;
}

static int put(simai_store *s, const char *key, struct simai_head *h, const void *data, int flags)
{
    struct put p = {key, 0, h, {data, flags & SIMAI_COLUMN_MAJOR}, NULL};
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &p.n)))
        return rc;
    if (!data && h->nbytes)
        return simai_fail(SIMAI_ERR_INVALID, "data must not be NULL");
    p.url = s->url;
    return simai_transact(s->env, s->url, put_work, &p, h->offset + h->nbytes, 1);
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

/* Find `key`'s entry in a new read transaction, which the caller ends (or a view keeps). */
static int find(simai_store *s, const char *key, MDB_txn **txn, struct simai_head *h,
                const uint8_t **payload)
{
    struct simai_lkey k;
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &n)) ||
        (rc = simai_read_txn(s->env, s->url, txn)))
        return rc;
    simai_lkey_name(&k, 'v', key, n);
    rc = simai_fetch(*txn, s->env, &k, h, payload, s->url);
    if (rc == SIMAI_ERR_NOT_FOUND)
        simai_fail(rc, "key '%s' not found in %s", key, s->url);
    else if (rc == SIMAI_ERR_CORRUPT)
        simai_error_context("key '%s' in %s: ", key, s->url);
    if (rc)
        mdb_txn_abort(*txn);
    return rc;
}

static int read_value(simai_store *s, const char *key, const struct simai_want *w)
{
    struct simai_head h;
    const uint8_t *payload;
    MDB_txn *txn;
    int rc;
    if (!w->buf && w->cap)
        return simai_fail(SIMAI_ERR_INVALID, "buf is NULL but cap is %zu", w->cap);
    if ((rc = find(s, key, &txn, &h, &payload)))
        return rc;
    rc = simai_deliver(&h, payload, w);
    mdb_txn_abort(txn);
    if (rc && rc != SIMAI_ERR_TOO_SMALL)
        simai_error_context("key '%s' in %s: ", key, s->url);
    return rc;
}

int simai_info_get(simai_store *s, const char *key, simai_info *info)
{
    struct simai_head h;
    const uint8_t *payload;
    MDB_txn *txn;
    int rc;
    if (!info)
        return simai_fail(SIMAI_ERR_INVALID, "info must not be NULL");
    if ((rc = find(s, key, &txn, &h, &payload)))
        return rc;
    simai_head_info(&h, info);
    mdb_txn_abort(txn);
    return SIMAI_OK;
}

int simai_get(simai_store *s, const char *key, void *buf, size_t cap, simai_info *info)
{
    struct simai_want w = {.kind = -1, .buf = buf, .cap = cap, .info = info};
    return read_value(s, key, &w);
}

int simai_get_bytes(simai_store *s, const char *key, void *buf, size_t cap, size_t *n)
{
    struct simai_want w = {.kind = SIMAI_KIND_BYTES, .buf = buf, .cap = cap, .n = n};
    return read_value(s, key, &w);
}

int simai_get_json(simai_store *s, const char *key, char *buf, size_t cap, size_t *n)
{
    struct simai_want w = {.kind = SIMAI_KIND_JSON, .buf = buf, .cap = cap, .nul = 1, .n = n};
    return read_value(s, key, &w);
}

int simai_get_array(simai_store *s, const char *key, const char *dtype, int ndim,
                    const uint64_t *shape, void *buf, int flags)
{
    struct simai_head want;
    struct simai_want w = {.kind = SIMAI_KIND_ARRAY, .dtype = dtype, .ndim = ndim,
                           .shape = shape, .flags = flags, .buf = buf};
    int rc = simai_head_array(&want, dtype, ndim, shape); /* checks dtype and shape */
    if (rc)
        return rc;
    w.cap = want.nbytes;
    if (!buf && want.nbytes)
        return simai_fail(SIMAI_ERR_INVALID, "buf must not be NULL");
    return read_value(s, key, &w);
}

int simai_view_get(simai_store *s, const char *key, simai_view **view, const void **data,
                   simai_info *info)
{
    struct simai_want w = {.kind = -1, .view = 1, .info = info};
    struct simai_head h;
    const uint8_t *payload;
    MDB_txn *txn;
    int rc;
    if (!view || !data)
        return simai_fail(SIMAI_ERR_INVALID, "view and data must not be NULL");
    *view = NULL;
    *data = NULL;
    if ((rc = find(s, key, &txn, &h, &payload)))
        return rc;
    if (!(*view = malloc(sizeof **view)))
        rc = simai_fail(SIMAI_ERR_NOMEM, "out of memory");
    else if ((rc = simai_deliver(&h, payload, &w)))
        simai_error_context("key '%s' in %s: ", key, s->url);
    if (rc) {
        free(*view);
        *view = NULL;
        mdb_txn_abort(txn);
        return rc;
    }
    (*view)->txn = txn;
    (*view)->env = s->env;
    simai_env_retain(s->env);
    *data = payload;
    return SIMAI_OK;
}

int simai_view_release(simai_view *view)
{
    if (view) {
        mdb_txn_abort(view->txn);
        simai_env_release(view->env);
        free(view);
    }
    return SIMAI_OK;
}

int simai_exists(simai_store *s, const char *key, int *exists)
{
    struct simai_head h;
    const uint8_t *payload;
    MDB_txn *txn;
    int rc;
    if (!exists)
        return simai_fail(SIMAI_ERR_INVALID, "exists must not be NULL");
    rc = find(s, key, &txn, &h, &payload);
    *exists = rc != SIMAI_ERR_NOT_FOUND;
    if (rc == SIMAI_ERR_NOT_FOUND || rc == SIMAI_ERR_CORRUPT) /* a damaged value exists */
        return SIMAI_OK;
    if (!rc)
        mdb_txn_abort(txn);
    return rc;
}

/* --- deleting ------------------------------------------------------------------------------ */

struct del {
    const char *key;
    size_t n;
    int existed;
    const char *url;
};

static int delete_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct del *d = arg;
    struct simai_lkey k;
    simai_lkey_name(&k, 'v', d->key, d->n);
    if (k.b[1] == SIMAI_HASHED) {
        MDB_val name;
        int rc;
        k.b[0] = 'n';
        name.mv_size = k.n;
        name.mv_data = k.b;
        if ((rc = mdb_del(txn, e->meta, &name, NULL)) && rc != MDB_NOTFOUND)
            return simai_lmdb_fail(rc, d->url, "deleting");
        k.b[0] = 'v';
    }
    return simai_pop_entry(txn, e, &k, &d->existed, d->url);
}

int simai_delete(simai_store *s, const char *key, int *existed)
{
    struct del d = {key, 0, 0, NULL};
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &d.n)))
        return rc;
    d.url = s->url;
    rc = simai_transact(s->env, s->url, delete_work, &d, 0, 1);
    if (existed)
        *existed = d.existed;
    return rc;
}

/* --- listing ------------------------------------------------------------------------------- */

struct list {
    char **keys;
    size_t count, cap;
};

static int list_add(struct list *l, const void *name, size_t n)
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

/* Short keys from `values` ("v" + prefix ...), long ones from their full names in `meta`. */
static int list_keys(MDB_txn *txn, struct simai_env *e, const char *prefix, struct list *l,
                     const char *url)
{
    size_t n = strlen(prefix);
    MDB_cursor *cur;
    MDB_val k, v;
    struct simai_lkey start;
    int rc, op, added = SIMAI_OK;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0 && n > SIMAI_NAME_MAX)
            continue; /* only long keys start with a long prefix */
        if (pass == 0)
            simai_lkey_name(&start, 'v', prefix, n);
        else {
            start.b[0] = 'n';
            start.n = 1;
        }
        if ((rc = mdb_cursor_open(txn, pass ? e->meta : e->values, &cur)))
            return simai_lmdb_fail(rc, url, "listing keys");
        k.mv_size = start.n;
        k.mv_data = start.b;
        for (op = MDB_SET_RANGE; !(rc = mdb_cursor_get(cur, &k, &v, op)); op = MDB_NEXT) {
            const uint8_t *kb = k.mv_data;
            if (k.mv_size < start.n || memcmp(kb, start.b, start.n))
                break;
            if (pass == 0 && !(k.mv_size > 1 && kb[1] == SIMAI_HASHED))
                added = list_add(l, kb + 1, k.mv_size - 1);
            else if (pass == 1 && v.mv_size >= n && !memcmp(v.mv_data, prefix, n))
                added = list_add(l, v.mv_data, v.mv_size);
            if (added)
                break;
        }
        mdb_cursor_close(cur);
        if (added)
            return added;
        if (rc && rc != MDB_NOTFOUND)
            return simai_lmdb_fail(rc, url, "listing keys");
    }
    return SIMAI_OK;
}

int simai_keys(simai_store *s, const char *prefix, char ***keys, size_t *count)
{
    struct list l = {NULL, 0, 0};
    MDB_txn *txn;
    int rc = simai_usable(s);
    if (rc)
        return rc;
    if (!keys || !count)
        return simai_fail(SIMAI_ERR_INVALID, "keys and count must not be NULL");
    *keys = NULL;
    *count = 0;
    if ((rc = simai_read_txn(s->env, s->url, &txn)))
        return rc;
    rc = list_keys(txn, s->env, prefix ? prefix : "", &l, s->url);
    mdb_txn_abort(txn);
    if (rc) {
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

struct lookup {
    simai_store *s;
    const char *key;
};

static int appeared(void *arg)
{
    struct lookup *q = arg;
    int exists, rc = simai_exists(q->s, q->key, &exists);
    return rc ? rc : exists ? SIMAI_OK : SIMAI_WAIT_AGAIN;
}

int simai_wait(simai_store *s, const char *key, double timeout)
{
    struct lookup q = {s, key};
    double deadline;
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(key, "key", &n)) || (rc = simai_deadline(timeout, &deadline)))
        return rc;
    rc = simai_wait_until(s->env, s->url, appeared, &q, deadline);
    if (rc == SIMAI_ERR_TIMEOUT)
        simai_fail(rc, "key '%s' did not appear within %.3g s in %s", key, timeout, s->url);
    return rc;
}

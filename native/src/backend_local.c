/* The node-local backend's values (local.py): LMDB in a private directory, zero-copy views. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "internal.h"
#include "paths.h"

/* --- writing ------------------------------------------------------------------------------- */

struct put {
    const char *key;
    size_t n;
    struct simai_head *head;
    const struct simai_src *src;
    const char *url;
};

static int put_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct put *p = arg;
    struct simai_lkey k;
    int rc;
    simai_lkey_name(&k, 'v', p->key, p->n);
    if ((rc = simai_put_entry(txn, e, &k, p->head, p->src, p->url)))
        return rc;
    if (k.b[1] == SIMAI_HASHED) { /* keep the long key's full name for keys() */
        MDB_val name = {k.n, k.b}, full = {p->n, (void *)p->key};
        k.b[0] = 'n';
        if ((rc = mdb_put(txn, e->meta, &name, &full, 0)))
            return simai_lmdb_fail(rc, p->url, "writing");
    }
    return SIMAI_OK;
}

static int local_put(simai_store *s, const char *key, size_t n, struct simai_head *h,
                     const struct simai_src *src)
{
    struct put p = {key, n, h, src, s->url};
    return simai_transact(s->env, s->url, put_work, &p, h->offset + h->nbytes, 1);
}

/* --- reading ------------------------------------------------------------------------------- */

/* Find `key`'s entry in a new read transaction, which the caller ends (or a view keeps). */
static int find(simai_store *s, const char *key, size_t n, MDB_txn **txn, struct simai_head *h,
                const uint8_t **payload)
{
    struct simai_lkey k;
    int rc = simai_read_txn(s->env, s->url, txn);
    if (rc)
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

static int local_get(simai_store *s, const char *key, size_t n, const struct simai_want *w,
                     simai_view **view, const void **data)
{
    struct simai_head h;
    const uint8_t *payload;
    MDB_txn *txn;
    int rc;
    if ((rc = find(s, key, n, &txn, &h, &payload)))
        return rc;
    if (w->view && !(*view = calloc(1, sizeof **view)))
        rc = simai_fail(SIMAI_ERR_NOMEM, "out of memory");
    else if ((rc = simai_deliver(&h, payload, w)) && rc != SIMAI_ERR_TOO_SMALL)
        simai_error_context("key '%s' in %s: ", key, s->url);
    if (rc || !w->view) {
        if (w->view) {
            free(*view);
            *view = NULL;
        }
        mdb_txn_abort(txn);
        return rc;
    }
    (*view)->txn = txn;
    (*view)->env = s->env;
    simai_env_retain(s->env);
    *data = payload;
    return SIMAI_OK;
}

static int local_exists(simai_store *s, const char *key, size_t n, int *exists)
{
    struct simai_head h;
    const uint8_t *payload;
    MDB_txn *txn;
    int rc = find(s, key, n, &txn, &h, &payload);
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

static int local_del(simai_store *s, const char *key, size_t n, int *existed)
{
    struct del d = {key, n, 0, s->url};
    int rc = simai_transact(s->env, s->url, delete_work, &d, 0, 1);
    *existed = d.existed;
    return rc;
}

/* --- listing ------------------------------------------------------------------------------- */

/* Short keys from `values` ("v" + prefix ...), long ones from their full names in `meta`. */
static int list_keys(MDB_txn *txn, struct simai_env *e, const char *prefix,
                     struct simai_keylist *l, const char *url)
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
                added = simai_keylist_add(l, kb + 1, k.mv_size - 1);
            else if (pass == 1 && v.mv_size >= n && !memcmp(v.mv_data, prefix, n))
                added = simai_keylist_add(l, v.mv_data, v.mv_size);
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

static int local_keys(simai_store *s, const char *prefix, struct simai_keylist *l)
{
    MDB_txn *txn;
    int rc = simai_read_txn(s->env, s->url, &txn);
    if (rc)
        return rc;
    rc = list_keys(txn, s->env, prefix, l, s->url);
    mdb_txn_abort(txn);
    return rc;
}

/* --- waiting ------------------------------------------------------------------------------- */

static int local_wait(simai_store *s, const char *key, size_t n, double deadline)
{
    struct simai_lookup q = {s, key, n};
    return simai_wait_until(s->env, s->url, simai_appeared, &q, deadline);
}

/* --- the table ----------------------------------------------------------------------------- */

static void local_close(simai_store *s)
{
    simai_env_release(s->env);
}

static int local_usable(simai_store *s)
{
    return simai_env_check(s->env, s->url);
}

/* local.py destroy: every process sees the mark; the directory goes (never through a
 * symlink), its memory once no process maps it */
static int local_destroy(simai_store *s)
{
    int rc;
    simai_env_mark_destroyed(s->env);
    if ((rc = simai_check_private(s->env->root)))
        return rc == SIMAI_ERR_NOT_FOUND ? SIMAI_OK : rc;
    if (simai_rmtree_at(AT_FDCWD, s->env->root) && errno != ENOENT)
        return simai_fail(SIMAI_ERR_IO, "store %s was destroyed, but %s could not be removed "
                          "completely: %s", s->url, s->env->root, strerror(errno));
    return SIMAI_OK;
}

static const struct simai_backend LOCAL = {
    .close = local_close,
    .usable = local_usable,
    .put = local_put,
    .get = local_get,
    .exists = local_exists,
    .del = local_del,
    .keys = local_keys,
    .wait = local_wait,
    .append = simai_local_append,
    .stream_get = simai_local_stream_get,
    .stream_info = simai_local_stream_info,
    .stream_close = simai_local_stream_close,
    .stream_create = simai_local_stream_create,
    .stream_delete = simai_local_stream_delete,
    .destroy = local_destroy,
    .position = simai_local_position,
    .set_position = simai_local_set_position,
};

int simai_local_open(simai_store *s)
{
    char root[PATH_MAX];
    int rc = simai_local_root(s->url, root, sizeof root);
    if (rc || (rc = simai_env_acquire(root, s->url, &s->env)))
        return rc;
    s->ops = &LOCAL;
    return SIMAI_OK;
}

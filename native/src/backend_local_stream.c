/* The node-local backend's streams: append (keeping a bounded stream's bounds, as
 * LocalStore._append does), read an entry by index, state, close. A stream's state record in
 * `meta` is <qqqqBB: length, start, dropped, maxlen (0: none), policy (1 block, 2 drop_oldest),
 * closed, followed by the stream's full name. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "internal.h"

#define STATE_BYTES 34
enum { BLOCK = 1, DROP_OLDEST = 2 };

static int64_t get_i64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return (int64_t)x;
}

static void put_i64(uint8_t *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)v >> (8 * i));
}

static int read_state(MDB_txn *txn, struct simai_env *e, const char *stream, size_t n,
                      simai_stream_state *st, const char *url)
{
    struct simai_lkey k;
    MDB_val key, val;
    const uint8_t *p;
    int rc;
    simai_lkey_name(&k, 's', stream, n);
    key.mv_size = k.n;
    key.mv_data = k.b;
    memset(st, 0, sizeof *st);
    rc = mdb_get(txn, e->meta, &key, &val);
    if (rc == MDB_NOTFOUND)
        return SIMAI_OK;
    if (rc)
        return simai_lmdb_fail(rc, url, "reading a stream's state");
    if (val.mv_size < STATE_BYTES)
        return simai_fail(SIMAI_ERR_CORRUPT, "stream '%s' in %s: its state record is damaged",
                          stream, url);
    p = val.mv_data;
    st->length = get_i64(p);
    st->start = get_i64(p + 8);
    st->dropped = get_i64(p + 16);
    st->maxlen = get_i64(p + 24);
    st->policy = p[32];
    st->closed = p[33];
    return SIMAI_OK;
}

/* Write a stream's state; its full name follows. */
static int write_state(MDB_txn *txn, struct simai_env *e, const char *stream, size_t n,
                       const simai_stream_state *st, const char *url)
{
    struct simai_lkey k;
    MDB_val key, val;
    uint8_t *p;
    int rc;
    simai_lkey_name(&k, 's', stream, n);
    key.mv_size = k.n;
    key.mv_data = k.b;
    val.mv_size = STATE_BYTES + n;
    if ((rc = mdb_put(txn, e->meta, &key, &val, MDB_RESERVE)))
        return simai_lmdb_fail(rc, url, "writing a stream's state");
    p = val.mv_data;
    put_i64(p, st->length);
    put_i64(p + 8, st->start);
    put_i64(p + 16, st->dropped);
    put_i64(p + 24, st->maxlen);
    p[32] = (uint8_t)st->policy;
    p[33] = (uint8_t)st->closed;
    memcpy(p + STATE_BYTES, stream, n);
    return SIMAI_OK;
}

/* The lowest position of the stream's consumer groups; *any is 0 when it has none. */
static int slowest_group(MDB_txn *txn, struct simai_env *e, const char *stream, size_t n,
                         int *any, int64_t *lowest, const char *url)
{
    struct simai_lkey prefix;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc, op;
    simai_lkey_name(&prefix, 'g', stream, n);
    prefix.b[prefix.n++] = 0;
    *any = 0;
    if ((rc = mdb_cursor_open(txn, e->meta, &cur)))
        return simai_lmdb_fail(rc, url, "reading consumer groups");
    k.mv_size = prefix.n;
    k.mv_data = prefix.b;
    for (op = MDB_SET_RANGE; !(rc = mdb_cursor_get(cur, &k, &v, op)); op = MDB_NEXT) {
        int64_t pos;
        if (k.mv_size < prefix.n || memcmp(k.mv_data, prefix.b, prefix.n) || v.mv_size < 8)
            break;
        pos = get_i64(v.mv_data);
        if (!*any || pos < *lowest)
            *lowest = pos;
        *any = 1;
    }
    mdb_cursor_close(cur);
    return rc && rc != MDB_NOTFOUND ? simai_lmdb_fail(rc, url, "reading consumer groups")
                                    : SIMAI_OK;
}

/* --- appending ----------------------------------------------------------------------------- */

struct append {
    simai_store *s;
    const char *stream;
    size_t n;
    struct simai_head *head;
    const struct simai_src *src;
    int64_t index;
};
static int append_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct append *a = arg;
    const char *url = a->s->url;
    simai_stream_state st;
    struct simai_lkey k;
    int64_t floor, lowest = 0;
    int any, rc = read_state(txn, e, a->stream, a->n, &st, url);
    if (rc)
        return rc;
    if (st.closed)
        return simai_fail(SIMAI_ERR_STREAM_CLOSED,
                          "stream '%s' was closed; no more values can be appended", a->stream);
    floor = st.start;
    if (st.maxlen) {
        if ((rc = slowest_group(txn, e, a->stream, a->n, &any, &lowest, url)))
            return rc;
        if (any)
            floor = lowest > st.start ? lowest : st.start;
        if (st.policy == BLOCK && st.length - floor >= st.maxlen)
            return SIMAI_WAIT_AGAIN; /* full: wait for the slowest group */
    }
    simai_lkey_entry(&k, a->stream, a->n, st.length);
    if ((rc = simai_put_entry(txn, e, &k, a->head, a->src, url)))
        return rc;
    st.length++;
    if (st.maxlen) {
        int64_t new_start = st.length - st.maxlen;
        if (st.policy == BLOCK && floor < new_start)
            new_start = floor;
        if (new_start > st.start) {
            for (int64_t i = st.start; i < new_start; i++) {
                int existed;
                simai_lkey_entry(&k, a->stream, a->n, i);
                if ((rc = simai_pop_entry(txn, e, &k, &existed, url)))
                    return rc;
            }
            if (st.policy == DROP_OLDEST) {
                int64_t from = st.start > floor ? st.start : floor;
                st.dropped += new_start > from ? new_start - from : 0;
            }
            st.start = new_start;
        }
    }
    st.closed = 0;
    a->index = st.length - 1;
    return write_state(txn, e, a->stream, a->n, &st, url);
}

static int attempt(void *arg)
{
    struct append *a = arg;
    return simai_transact(a->s->env, a->s->url, append_work, a, a->head->offset + a->head->nbytes,
                          1);
}

int simai_local_append(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                       const struct simai_src *src, double deadline, int64_t *index)
{
    struct append a = {s, stream, n, h, src, -1};
    int rc = simai_wait_until(s->env, s->url, attempt, &a, deadline);
    if (!rc)
        *index = a.index;
    return rc;
}

/* --- reading ------------------------------------------------------------------------------- */

struct entry_read {
    simai_store *s;
    const char *stream;
    size_t n;
    int64_t index;
    const struct simai_want *want;
    MDB_txn *kept; /* a view's transaction */
    const uint8_t *payload;
};

/* Deliver entry `index` if it is there; else say whether it was trimmed, will never come, or
 * may still come (SIMAI_WAIT_AGAIN). */
static int try_read(void *arg)
{
    struct entry_read *r = arg;
    const char *url = r->s->url;
    struct simai_head h;
    struct simai_lkey k;
    simai_stream_state st;
    MDB_txn *txn;
    int rc = simai_read_txn(r->s->env, url, &txn);
    if (rc)
        return rc;
    simai_lkey_entry(&k, r->stream, r->n, r->index);
    rc = simai_fetch(txn, r->s->env, &k, &h, &r->payload, url);
    if (!rc)
        rc = simai_deliver(&h, r->payload, r->want);
    if (rc == SIMAI_ERR_NOT_FOUND &&
        !(rc = read_state(txn, r->s->env, r->stream, r->n, &st, url))) {
        if (r->index < st.start)
            rc = simai_fail(SIMAI_ERR_TRIMMED,
                            "stream '%s' entry %" PRId64 " was trimmed: the stream now starts "
                            "at %" PRId64,
                            r->stream, r->index, st.start);
        else if (st.closed && r->index >= st.length)
            rc = simai_fail(SIMAI_ERR_ENDED, "stream '%s' was closed after %" PRId64 " values",
                            r->stream, st.length);
        else
            rc = SIMAI_WAIT_AGAIN;
    } else if (rc && rc != SIMAI_ERR_TOO_SMALL && rc != SIMAI_ERR_NOT_FOUND)
        simai_error_context("stream '%s' entry %" PRId64 " in %s: ", r->stream, r->index, url);
    if (!rc && r->want->view)
        r->kept = txn;
    else
        mdb_txn_abort(txn);
    return rc;
}

int simai_local_stream_get(simai_store *s, const char *stream, size_t n, int64_t index,
                           double deadline, const struct simai_want *w, simai_view **view,
                           const void **data)
{
    struct entry_read r = {s, stream, n, index, w, NULL, NULL};
    int rc;
    if (w->view && !(*view = calloc(1, sizeof **view)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory");
    if ((rc = simai_wait_until(s->env, s->url, try_read, &r, deadline)) || !w->view) {
        if (w->view) {
            free(*view);
            *view = NULL;
        }
        return rc;
    }
    (*view)->txn = r.kept;
    (*view)->env = s->env;
    simai_env_retain(s->env);
    *data = r.payload;
    return SIMAI_OK;
}

/* --- state --------------------------------------------------------------------------------- */

int simai_local_stream_info(simai_store *s, const char *stream, size_t n,
                            simai_stream_state *state)
{
    MDB_txn *txn;
    int rc = simai_read_txn(s->env, s->url, &txn);
    if (rc)
        return rc;
    rc = read_state(txn, s->env, stream, n, state, s->url);
    mdb_txn_abort(txn);
    return rc;
}

struct close_stream {
    const char *stream;
    size_t n;
    const char *url;
};

static int close_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct close_stream *c = arg;
    simai_stream_state st;
    int rc = read_state(txn, e, c->stream, c->n, &st, c->url);
    if (rc)
        return rc;
    st.closed = 1;
    return write_state(txn, e, c->stream, c->n, &st, c->url);
}

int simai_local_stream_close(simai_store *s, const char *stream, size_t n)
{
    struct close_stream c = {stream, n, s->url};
    return simai_transact(s->env, s->url, close_work, &c, 0, 1);
}

/* --- declaring and deleting --------------------------------------------------------------- */

struct declare {
    const char *stream;
    size_t n;
    const simai_stream_state *want;
    simai_stream_state *have;
    const char *url;
};

/* LocalStore._create_stream: bounds for a stream with no state, or an empty unbounded one */
static int declare_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct declare *d = arg;
    simai_stream_state *st = d->have;
    int rc = read_state(txn, e, d->stream, d->n, st, d->url);
    if (rc || st->maxlen || st->length)
        return rc;
    st->maxlen = d->want->maxlen;
    st->policy = d->want->policy;
    return write_state(txn, e, d->stream, d->n, st, d->url);
}

int simai_local_stream_create(simai_store *s, const char *stream, size_t n,
                              const simai_stream_state *want, simai_stream_state *have)
{
    struct declare d = {stream, n, want, have, s->url};
    return simai_transact(s->env, s->url, declare_work, &d, 0, 1);
}

struct remove_stream {
    const char *stream;
    size_t n;
    int existed;
    const char *url;
};

/* Delete every record of `db` whose key starts with prefix[0..len). */
static int delete_prefix(MDB_txn *txn, MDB_dbi db, const uint8_t *prefix, size_t len,
                         int *any, const char *url)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(txn, db, &cur)))
        return simai_lmdb_fail(rc, url, "deleting a stream");
    for (;;) { /* the first record at or after the prefix, again after each delete */
        k.mv_size = len;
        k.mv_data = (void *)prefix;
        if ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)) || k.mv_size < len ||
            memcmp(k.mv_data, prefix, len))
            break;
        *any = 1;
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
    }
    mdb_cursor_close(cur);
    return rc && rc != MDB_NOTFOUND ? simai_lmdb_fail(rc, url, "deleting a stream") : SIMAI_OK;
}

/* LocalStore._delete_stream: its state, its entries (values and payloads) and its groups */
static int remove_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct remove_stream *r = arg;
    struct simai_lkey k;
    MDB_val key;
    int rc;
    simai_lkey_name(&k, 's', r->stream, r->n);
    key.mv_size = k.n;
    key.mv_data = k.b;
    rc = mdb_del(txn, e->meta, &key, NULL);
    if (rc && rc != MDB_NOTFOUND)
        return simai_lmdb_fail(rc, r->url, "deleting a stream");
    r->existed = !rc;
    k.b[0] = 'e';
    k.b[k.n++] = 0;
    if ((rc = delete_prefix(txn, e->values, k.b, k.n, &r->existed, r->url)) ||
        (rc = delete_prefix(txn, e->payloads, k.b, k.n, &r->existed, r->url)))
        return rc;
    k.b[0] = 'g';
    return delete_prefix(txn, e->meta, k.b, k.n, &r->existed, r->url);
}

int simai_local_stream_delete(simai_store *s, const char *stream, size_t n, int *existed)
{
    struct remove_stream r = {stream, n, 0, s->url};
    int rc = simai_transact(s->env, s->url, remove_work, &r, 0, 1);
    *existed = !rc && r.existed;
    return rc;
}

/* --- consumer groups ----------------------------------------------------------------------- */

/* "g" + STREAM + "\0" + GROUP, each name as LMDB holds it (local.py _group_key) */
static size_t group_key(uint8_t *out, const char *stream, size_t n, const char *group, size_t gn)
{
    struct simai_lkey k;
    size_t len;
    simai_lkey_name(&k, 'g', stream, n);
    memcpy(out, k.b, k.n);
    len = k.n;
    out[len++] = 0;
    simai_lkey_name(&k, 0, group, gn);
    memcpy(out + len, k.b + 1, k.n - 1);
    return len + k.n - 1;
}

int simai_local_position(simai_store *s, const char *stream, size_t n, const char *group,
                         size_t gn, int64_t *index, int *found)
{
    uint8_t kb[2 * (SIMAI_NAME_MAX + 2)];
    MDB_val key = {group_key(kb, stream, n, group, gn), kb}, val;
    MDB_txn *txn;
    int rc = simai_read_txn(s->env, s->url, &txn);
    if (rc)
        return rc;
    rc = mdb_get(txn, s->env->meta, &key, &val);
    *found = !rc && val.mv_size >= 8;
    if (*found)
        *index = get_i64(val.mv_data);
    mdb_txn_abort(txn);
    return rc && rc != MDB_NOTFOUND ? simai_lmdb_fail(rc, s->url, "reading a group's position")
                                    : SIMAI_OK;
}

struct position {
    const char *stream, *group;
    size_t n, gn;
    int64_t index;
    const char *url;
};

static int position_work(MDB_txn *txn, struct simai_env *e, void *arg)
{
    struct position *p = arg;
    uint8_t kb[2 * (SIMAI_NAME_MAX + 2)];
    MDB_val key = {group_key(kb, p->stream, p->n, p->group, p->gn), kb}, val;
    int rc;
    val.mv_size = 8 + p->gn; /* <q position, then the group's full name */
    if ((rc = mdb_put(txn, e->meta, &key, &val, MDB_RESERVE)))
        return simai_lmdb_fail(rc, p->url, "writing a group's position");
    put_i64(val.mv_data, p->index);
    memcpy((uint8_t *)val.mv_data + 8, p->group, p->gn);
    return SIMAI_OK;
}

int simai_local_set_position(simai_store *s, const char *stream, size_t n, const char *group,
                             size_t gn, int64_t index)
{
    struct position p = {stream, group, n, gn, index, s->url};
    return simai_transact(s->env, s->url, position_work, &p, 0, 1);
}

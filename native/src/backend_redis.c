/* The redis:// backend (simai/store/redis.py): redis-server shards, client-side hashing.
 *
 *   redis://[user@]host:port[,host:port,...]     rediss://... the same, over TLS (tls.h)
 *
 * Each key, and each stream as a whole, lives on shard crc32(name) % shards. The password is
 * $SIMAI_STORE_PASSWORD (else one in the URL, accepted as Python accepts it), the user the
 * URL's, else $SIMAI_STORE_USER; AUTH is sent on connect. A command the user's access rules
 * refuse is SIMAI_ERR_PERMISSION naming the key and the operation. The layout inside Redis is redis.py's, so either client reads what the other wrote:
 *
 *   simai:v:KEY          the entry (header + payload), or a chunk pointer when it is large
 *   simai:p:KEY          copy of the current chunk pointer
 *   simai:c:KEY\0VER:I   chunk I of version VER of a large value
 *   simai:n:KEY          pub/sub channel announcing each put of KEY (for wait)
 *   simai:s:NAME         a stream: a list of entries (or chunk pointers, simai:d:NAME\0VER:I)
 *   simai:e:NAME         the stream's length when it was closed
 *   simai:m:NAME         pub/sub channel announcing each append to / close of NAME
 *   simai:b:NAME         a bounded stream's hash: maxlen, policy, start, dropped
 *   simai:g:NAME         hash of consumer group -> position
 *   simai:x:NAME         hash of index -> chunk pointer, for a bounded stream's chunked entries
 *   simai:a:NAME         pub/sub channel announcing group progress and closing
 *
 * This client reads chunked values and entries, and writes every value and entry whole (up to
 * Redis's 512 MB), so it never makes chunks; a bounded append runs redis.py's own Lua script.
 * Waits subscribe to the channel on a connection of their own, then re-check, as redis.py
 * does, so a put between the check and the subscription is not missed. This file holds the
 * values; backend_redis_stream.c the streams, redis_shards.c what both use. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_redis.h"
#include "error.h"
#include "internal.h"

#define RETRIES 100

/* redis.py's _COLLECT_SCRIPT, verbatim: take the chunk pointer of KEY unless KEY's head still
 * points to those chunks. */
static const char COLLECT[] =
    "\nlocal p = redis.call('GET', KEYS[2])\n"
    "if not p then return false end\n"
    "if redis.call('STRLEN', KEYS[1]) == #p and redis.call('GET', KEYS[1]) == p then return "
    "false end\n"
    "redis.call('DEL', KEYS[2])\n"
    "return p\n";

/* --- values -------------------------------------------------------------------------------- */

static int redis_put(simai_store *s, const char *key, size_t n, struct simai_head *h,
                     const struct simai_src *src)
{
    char vkey[RKEY_CAP], pkey[RKEY_CAP], nkey[RKEY_CAP], header[SIMAI_MAX_HEADER];
    struct simai_reply r[3], old;
    const void *payload;
    void *copy;
    int i = simai_redis_shard(s, key, n), rc = simai_seal(h, src, &payload, &copy);
    struct cmd cmds[3] = {
        {3, {STR("SET"), KEY(vkey, 'v', key, n),
             {header, h->offset, payload, h->nbytes}}},
        {2, {STR("EXISTS"), KEY(pkey, 'p', key, n)}},
        {3, {STR("PUBLISH"), KEY(nkey, 'n', key, n), STR("1")}},
    };
    struct cmd collect = {5, {STR("EVAL"), STR(COLLECT), STR("2"), cmds[0].argv[1],
                              cmds[1].argv[1]}};
    if (rc)
        return rc;
    simai_head_write(h, (uint8_t *)header);
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 3, cmds, r);
    free(copy);
    if (!rc && r[1].integer && !(rc = simai_redis_run(s, i, 1, &collect, &old))) {
        /* it replaced a chunked value (from Python): its chunks go */
        rc = simai_redis_drop_chunks(s, i, 'c', key, n, &old);
        simai_reply_free(&old);
    }
    simai_redis_unlock(s, i);
    for (int k = 0; k < 3; k++)
        simai_reply_free(&r[k]);
    return rc;
}

/* The whole entry of `key` (gathered from its chunks if it has them), or with `head` at least
 * its header: SIMAI_ERR_NOT_FOUND with no message if none. */
static int read_entry(simai_store *s, const char *key, size_t n, int head, uint8_t **buf,
                      size_t *len)
{
    char vkey[RKEY_CAP], last[16];
    struct cmd get = {2, {STR("GET"), KEY(vkey, 'v', key, n)}};
    if (head) /* the header's bytes only ("" if the key is missing: no entry is empty) */
        get = (struct cmd){4, {STR("GETRANGE"), get.argv[1], STR("0"),
                               ARG(last, (size_t)sprintf(last, "%d", SIMAI_MAX_HEADER - 1))}};
    int i = simai_redis_shard(s, key, n), rc = SIMAI_WAIT_AGAIN;
    simai_redis_lock(s, i);
    for (int tries = 0; tries < RETRIES && rc == SIMAI_WAIT_AGAIN; tries++) {
        struct simai_reply r;
        if ((rc = simai_redis_run(s, i, 1, &get, &r)))
            break;
        if (r.type != SIMAI_BULK || !r.len)
            rc = SIMAI_ERR_NOT_FOUND;
        else if (simai_redis_is_pointer(&r))
            rc = simai_redis_gather(s, i, 'c', key, n, r.str, buf, len);
        else {
            *buf = (uint8_t *)r.str; /* taken: the reply's buffer is the entry */
            *len = r.len;
            r.str = NULL;
        }
        simai_reply_free(&r);
    }
    simai_redis_unlock(s, i);
    if (rc == SIMAI_WAIT_AGAIN)
        rc = simai_fail(SIMAI_ERR_IO, "redis store %s: key '%s' kept changing while being read "
                        "(%d tries)", s->url, key, RETRIES);
    return rc;
}

static int redis_get(simai_store *s, const char *key, size_t n, const struct simai_want *w,
                     simai_view **view, const void **data)
{
    char what[SIMAI_MAX_KEY_BYTES + 600];
    uint8_t *buf;
    size_t len;
    int rc = read_entry(s, key, n, w->head_only, &buf, &len);
    if (rc == SIMAI_ERR_NOT_FOUND)
        return simai_fail(rc, "key '%s' not found in %s", key, s->url);
    if (rc)
        return rc;
    snprintf(what, sizeof what, "key '%s' in %s", key, s->url);
    return simai_deliver_whole(buf, len, w, view, data, what);
}

static int redis_exists(simai_store *s, const char *key, size_t n, int *exists)
{
    char vkey[RKEY_CAP];
    struct cmd cmd = {2, {STR("EXISTS"), KEY(vkey, 'v', key, n)}};
    struct simai_reply r;
    int i = simai_redis_shard(s, key, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 1, &cmd, &r);
    simai_redis_unlock(s, i);
    if (!rc)
        *exists = r.integer == 1;
    simai_reply_free(&r);
    return rc;
}

static int redis_del(simai_store *s, const char *key, size_t n, int *existed)
{
    char vkey[RKEY_CAP], pkey[RKEY_CAP];
    struct cmd cmds[4] = {
        {1, {STR("MULTI")}},
        {2, {STR("DEL"), KEY(vkey, 'v', key, n)}},
        {2, {STR("GETDEL"), KEY(pkey, 'p', key, n)}},
        {1, {STR("EXEC")}},
    };
    struct simai_reply r[4];
    int i = simai_redis_shard(s, key, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 4, cmds, r);
    if (!rc && r[3].type == SIMAI_ARRAY && r[3].len == 2) {
        *existed = r[3].elem[0].integer == 1;
        rc = simai_redis_drop_chunks(s, i, 'c', key, n, &r[3].elem[1]);
    }
    simai_redis_unlock(s, i);
    for (int k = 0; k < 4; k++)
        simai_reply_free(&r[k]);
    return rc;
}

static int redis_keys(simai_store *s, const char *prefix, struct simai_keylist *l)
{
    char pattern[2 * SIMAI_MAX_KEY_BYTES + 16], cursor[32] = "0";
    size_t head = sizeof SIMAI_REDIS_NS + 1, np = simai_redis_key(pattern, 'v', "", 0);
    int rc = SIMAI_OK;
    for (const char *p = prefix; *p; p++) { /* glob-escaped */
        if (strchr("\\*?[]", *p))
            pattern[np++] = '\\';
        pattern[np++] = *p;
    }
    pattern[np++] = '*';
    for (int i = 0; i < R(s)->n && !rc; i++) {
        simai_redis_lock(s, i);
        do {
            struct cmd scan = {6, {STR("SCAN"), STR(cursor), STR("MATCH"), ARG(pattern, np),
                                   STR("COUNT"), STR("1000")}};
            struct simai_reply r;
            if ((rc = simai_redis_run(s, i, 1, &scan, &r)))
                break;
            snprintf(cursor, sizeof cursor, "%s", r.elem[0].str);
            for (size_t k = 0; k < r.elem[1].len && !rc; k++)
                rc = simai_keylist_add(l, r.elem[1].elem[k].str + head,
                                       r.elem[1].elem[k].len - head);
            simai_reply_free(&r);
        } while (!rc && strcmp(cursor, "0"));
        simai_redis_unlock(s, i);
        strcpy(cursor, "0");
    }
    return rc;
}

/* A wait's check, on this backend's own exists (a refusal stays SIMAI_REDIS_DENIED, for the
 * wait to name). */
static int appeared(void *arg)
{
    struct simai_lookup *q = arg;
    int exists = 0, rc = redis_exists(q->s, q->key, q->n, &exists);
    return rc ? rc : exists ? SIMAI_OK : SIMAI_WAIT_AGAIN;
}

static int redis_wait(simai_store *s, const char *key, size_t n, double deadline)
{
    struct simai_lookup q = {s, key, n};
    char channel[RKEY_CAP];
    size_t len = simai_redis_key(channel, 'n', key, n);
    int i = simai_redis_shard(s, key, n);
    return simai_redis_notified(s, i, channel, len, appeared, &q, deadline);
}

/* --- access rules: what a refused command becomes ------------------------------------------ */

/* Each operation of the table, with a command Redis refused (NOPERM) turned into
 * SIMAI_ERR_PERMISSION naming the key or stream and the operation (redis.py's names). */
static int put_checked(simai_store *s, const char *key, size_t n, struct simai_head *h,
                       const struct simai_src *src)
{
    return simai_redis_denied(s, redis_put(s, key, n, h, src), "write", key);
}

static int get_checked(simai_store *s, const char *key, size_t n, const struct simai_want *w,
                       simai_view **view, const void **data)
{
    return simai_redis_denied(s, redis_get(s, key, n, w, view, data), "read", key);
}

static int exists_checked(simai_store *s, const char *key, size_t n, int *exists)
{
    return simai_redis_denied(s, redis_exists(s, key, n, exists), "read", key);
}

static int del_checked(simai_store *s, const char *key, size_t n, int *existed)
{
    return simai_redis_denied(s, redis_del(s, key, n, existed), "delete", key);
}

static int keys_checked(simai_store *s, const char *prefix, struct simai_keylist *l)
{
    return simai_redis_denied(s, redis_keys(s, prefix, l), "list the keys under", prefix);
}

static int wait_checked(simai_store *s, const char *key, size_t n, double deadline)
{
    return simai_redis_denied(s, redis_wait(s, key, n, deadline), "wait for", key);
}

static int append_checked(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                          const struct simai_src *src, double deadline, int64_t *index)
{
    return simai_redis_denied(s, simai_redis_append(s, stream, n, h, src, deadline, index),
                              "append to", stream);
}

static int stream_get_checked(simai_store *s, const char *stream, size_t n, int64_t index,
                              double deadline, const struct simai_want *w, simai_view **view,
                              const void **data)
{
    int rc = simai_redis_stream_get(s, stream, n, index, deadline, w, view, data);
    return simai_redis_denied(s, rc, "read stream", stream);
}

static int stream_info_checked(simai_store *s, const char *stream, size_t n,
                               simai_stream_state *st)
{
    return simai_redis_denied(s, simai_redis_stream_info(s, stream, n, st), "read stream",
                              stream);
}

static int stream_close_checked(simai_store *s, const char *stream, size_t n)
{
    return simai_redis_denied(s, simai_redis_stream_close(s, stream, n), "close stream", stream);
}

static int stream_create_checked(simai_store *s, const char *stream, size_t n,
                                 const simai_stream_state *want, simai_stream_state *have)
{
    return simai_redis_denied(s, simai_redis_stream_create(s, stream, n, want, have),
                              "create stream", stream);
}

static int stream_delete_checked(simai_store *s, const char *stream, size_t n, int *existed)
{
    return simai_redis_denied(s, simai_redis_stream_delete(s, stream, n, existed),
                              "delete stream", stream);
}

static int position_checked(simai_store *s, const char *stream, size_t n, const char *group,
                            size_t gn, int64_t *index, int *found)
{
    return simai_redis_denied(s, simai_redis_position(s, stream, n, group, gn, index, found),
                              "read stream", stream);
}

static int set_position_checked(simai_store *s, const char *stream, size_t n, const char *group,
                                size_t gn, int64_t index)
{
    return simai_redis_denied(s, simai_redis_set_position(s, stream, n, group, gn, index),
                              "read stream", stream);
}

/* --- the table ------------------------------------------------------------------------------ */

static int redis_usable(simai_store *s)
{
    (void)s;
    return SIMAI_OK;
}

static const struct simai_backend REDIS = {
    .close = simai_redis_free,
    .usable = redis_usable,
    .put = put_checked,
    .get = get_checked,
    .exists = exists_checked,
    .del = del_checked,
    .keys = keys_checked,
    .wait = wait_checked,
    .append = append_checked,
    .stream_get = stream_get_checked,
    .stream_info = stream_info_checked,
    .stream_close = stream_close_checked,
    .stream_create = stream_create_checked,
    .stream_delete = stream_delete_checked,
    .position = position_checked,
    .set_position = set_position_checked,
};

int simai_redis_open(simai_store *s)
{
    int rc = simai_redis_parse(s);
    if (rc)
        return rc;
    s->ops = &REDIS;
    for (int i = 0; i < R(s)->n && !rc; i++) { /* reach every shard now, as Python does */
        simai_redis_lock(s, i);
        rc = simai_redis_connect(s, i, &R(s)->sh[i].conn);
        simai_redis_unlock(s, i);
    }
    if (rc)
        simai_redis_free(s);
    return rc;
}

/* The redis:// backend's streams and consumer groups, laid out as redis.py lays them out (see
 * backend_redis.c). An unbounded stream's index is its list position; a bounded one is
 * appended to by redis.py's own Lua script, which checks for space, pushes and trims as one
 * step and keeps index = start + list position. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_redis.h"
#include "error.h"
#include "internal.h"

/* redis.py's scripts, verbatim. _CLOSE_SCRIPT: record the length at closing. */
static const char CLOSE[] =
    "\nlocal start = tonumber(redis.call('HGET', KEYS[3], 'start') or '0')\n"
    "return redis.call('SET', KEYS[2], start + redis.call('LLEN', KEYS[1]), 'NX')\n";

/* _APPEND_SCRIPT: append ARGV[1] to a bounded stream and trim it; returns {index, trimmed
 * chunk pointers...}, {-1} if the stream is closed, {-2} if it is full. */
static const char APPEND[] =
    "\nif redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end\n"
    "local b = redis.call('HMGET', KEYS[3], 'maxlen', 'policy', 'start')\n"
    "local maxlen, policy, start = tonumber(b[1]), b[2], tonumber(b[3])\n"
    "local head = start + redis.call('LLEN', KEYS[1])\n"
    "local floor = nil\n"
    "for _, v in ipairs(redis.call('HVALS', KEYS[4])) do\n"
    "  local p = tonumber(v)\n"
    "  if floor == nil or p < floor then floor = p end\n"
    "end\n"
    "if floor == nil or floor < start then floor = start end\n"
    "if policy == 'block' and head - floor >= maxlen then return {-2} end\n"
    "redis.call('RPUSH', KEYS[1], ARGV[1])\n"
    "if ARGV[2] == '1' then redis.call('HSET', KEYS[5], head, ARGV[1]) end\n"
    "redis.call('PUBLISH', ARGV[3], 1)\n"
    "local out = {head}\n"
    "head = head + 1\n"
    "local new_start = head - maxlen\n"
    "if policy == 'block' and floor < new_start then new_start = floor end\n"
    "if new_start > start then\n"
    "  redis.call('LTRIM', KEYS[1], new_start - start, -1)\n"
    "  if redis.call('HLEN', KEYS[5]) > 0 then\n"
    "    for i = start, new_start - 1 do\n"
    "      local p = redis.call('HGET', KEYS[5], i)\n"
    "      if p then\n"
    "        redis.call('HDEL', KEYS[5], i)\n"
    "        table.insert(out, p)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if policy == 'drop_oldest' then\n"
    "    local lost = new_start - math.max(start, floor)\n"
    "    if lost > 0 then redis.call('HINCRBY', KEYS[3], 'dropped', lost) end\n"
    "  end\n"
    "  redis.call('HSET', KEYS[3], 'start', new_start)\n"
    "end\n"
    "return out\n";

struct append {
    simai_store *s;
    int i;
    const char *stream;
    size_t n;
    struct cmd eval;
    int64_t index;
};

/* One try at a bounded append: redis.py's script checks for space, pushes and trims. */
static int append_bounded(void *arg)
{
    struct append *a = arg;
    struct simai_reply r;
    int rc;
    simai_redis_lock(a->s, a->i);
    if (!(rc = simai_redis_run(a->s, a->i, 1, &a->eval, &r))) {
        a->index = r.len ? r.elem[0].integer : -1;
        if (a->index == -1)
            rc = simai_fail(SIMAI_ERR_STREAM_CLOSED,
                            "stream '%s' was closed; no more values can be appended", a->stream);
        else if (a->index == -2)
            rc = SIMAI_WAIT_AGAIN;
        for (size_t k = 1; !rc && k < r.len; k++) /* trimmed entries' chunks, from Python */
            rc = simai_redis_drop_chunks(a->s, a->i, 'd', a->stream, a->n, &r.elem[k]);
        simai_reply_free(&r);
    }
    simai_redis_unlock(a->s, a->i);
    return rc;
}

int simai_redis_append(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                       const struct simai_src *src, double deadline, int64_t *index)
{
    char sk[RKEY_CAP], ek[RKEY_CAP], bk[RKEY_CAP], gk[RKEY_CAP], xk[RKEY_CAP], mk[RKEY_CAP],
        ak[RKEY_CAP], header[SIMAI_MAX_HEADER];
    struct simai_reply r[3];
    const void *payload;
    void *copy;
    int i = simai_redis_shard(s, stream, n), rc = simai_seal(h, src, &payload, &copy);
    struct simai_arg value = {header, h->offset, payload, h->nbytes};
    struct cmd bounds = {4, {STR("HMGET"), KEY(bk, 'b', stream, n), STR("maxlen"),
                             STR("policy")}};
    struct cmd push[3] = {
        {3, {STR("RPUSH"), KEY(sk, 's', stream, n), value}},
        {2, {STR("GET"), KEY(ek, 'e', stream, n)}},
        {3, {STR("PUBLISH"), KEY(mk, 'm', stream, n), STR("1")}},
    };
    if (rc)
        return rc;
    simai_head_write(h, (uint8_t *)header);
    simai_redis_lock(s, i);
    if (!(rc = simai_redis_run(s, i, 1, &bounds, r))) {
        int bounded = r[0].elem[0].type == SIMAI_BULK;
        simai_reply_free(&r[0]);
        if (bounded) {
            struct append a = {s, i, stream, n,
                               {11, {STR("EVAL"), STR(APPEND), STR("5"), push[0].argv[1],
                                     push[1].argv[1], bounds.argv[1],
                                     KEY(gk, 'g', stream, n),
                                     KEY(xk, 'x', stream, n), value, STR("0"),
                                     push[2].argv[1]}},
                               -1};
            size_t len = simai_redis_key(ak, 'a', stream, n);
            simai_redis_unlock(s, i);
            rc = simai_redis_notified(s, i, ak, len, append_bounded, &a, deadline);
            *index = a.index;
            free(copy);
            return rc;
        }
        rc = simai_redis_run(s, i, 3, push, r);
    }
    if (!rc) {
        int64_t count = r[0].integer;
        int64_t closed_at = r[1].type == SIMAI_BULK ? simai_redis_int(&r[1]) : -1;
        for (int k = 0; k < 3; k++)
            simai_reply_free(&r[k]);
        *index = count - 1;
        if (closed_at >= 0 && count > closed_at) { /* closed before this push: take it back */
            char end[32];
            struct cmd trim = {4, {STR("LTRIM"), push[0].argv[1], STR("0"),
                                   ARG(end, (size_t)sprintf(end, "%" PRId64, closed_at - 1))}};
            if (!(rc = simai_redis_run(s, i, 1, &trim, r)))
                simai_reply_free(&r[0]);
            rc = rc ? rc
                    : simai_fail(SIMAI_ERR_STREAM_CLOSED,
                                 "stream '%s' is closed: it takes no more appends", stream);
        }
    }
    simai_redis_unlock(s, i);
    free(copy);
    return rc;
}

struct entry_read {
    simai_store *s;
    int i;
    const char *stream;
    size_t n;
    int64_t index, assumed; /* the start the list position was computed with */
    const struct simai_want *want;
    simai_view **view;
    const void **data;
};

static int trimmed(const char *stream, int64_t index, int64_t start)
{
    return simai_fail(SIMAI_ERR_TRIMMED,
                      "stream '%s' entry %" PRId64 " was trimmed: the stream now starts at "
                      "%" PRId64,
                      stream, index, start);
}

/* Entry `index`, if the stream holds it (redis.py _stream_read's check). `start` only grows:
 * if it still equals the start assumed, LINDEX read entry `index`. Shard i's lock is held. */
static int fetch_entry(struct entry_read *q, uint8_t **buf, size_t *len)
{
    char sk[RKEY_CAP], ek[RKEY_CAP], bk[RKEY_CAP], pos[32];
    struct simai_reply r[3];
    int64_t start, closed_at;
    int rc;
    for (;;) {
        struct cmd cmds[3] = {
            {3, {STR("LINDEX"), KEY(sk, 's', q->stream, q->n),
                 ARG(pos, (size_t)sprintf(pos, "%" PRId64, q->index >= q->assumed
                                                               ? q->index - q->assumed
                                                               : (int64_t)1 << 62))}},
            {2, {STR("GET"), KEY(ek, 'e', q->stream, q->n)}},
            {3, {STR("HGET"), KEY(bk, 'b', q->stream, q->n), STR("start")}},
        };
        if ((rc = simai_redis_run(q->s, q->i, 3, cmds, r)))
            return rc;
        start = r[2].type == SIMAI_BULK ? simai_redis_int(&r[2]) : 0;
        if (start == q->assumed)
            break;
        q->assumed = start;
        for (int k = 0; k < 3; k++)
            simai_reply_free(&r[k]);
    }
    closed_at = r[1].type == SIMAI_BULK ? simai_redis_int(&r[1]) : -1;
    if (q->index < start)
        rc = trimmed(q->stream, q->index, start);
    else if (closed_at >= 0 && q->index >= closed_at)
        rc = simai_fail(SIMAI_ERR_ENDED, "stream '%s' was closed after %" PRId64 " values",
                        q->stream, closed_at);
    else if (r[0].type != SIMAI_BULK)
        rc = SIMAI_WAIT_AGAIN;
    else if (simai_redis_is_pointer(&r[0])) {
        rc = simai_redis_gather(q->s, q->i, 'd', q->stream, q->n, r[0].str, buf, len);
        if (rc == SIMAI_WAIT_AGAIN)
            rc = simai_fail(SIMAI_ERR_TRIMMED, "stream '%s' entry %" PRId64 " was trimmed or "
                            "deleted while it was read", q->stream, q->index);
    } else {
        *buf = (uint8_t *)r[0].str; /* taken: the reply's buffer is the entry */
        *len = r[0].len;
        r[0].str = NULL;
    }
    for (int k = 0; k < 3; k++)
        simai_reply_free(&r[k]);
    return rc;
}

static int try_read(void *arg)
{
    struct entry_read *q = arg;
    char what[SIMAI_MAX_KEY_BYTES + 600];
    uint8_t *buf;
    size_t len;
    int rc;
    simai_redis_lock(q->s, q->i);
    rc = fetch_entry(q, &buf, &len);
    simai_redis_unlock(q->s, q->i);
    if (rc)
        return rc;
    snprintf(what, sizeof what, "stream '%s' entry %" PRId64 " in %s", q->stream, q->index,
             q->s->url);
    return simai_deliver_whole(buf, len, q->want, q->view, q->data, what);
}

int simai_redis_stream_get(simai_store *s, const char *stream, size_t n, int64_t index,
                           double deadline, const struct simai_want *w, simai_view **view,
                           const void **data)
{
    struct entry_read q = {s, simai_redis_shard(s, stream, n), stream, n, index, 0, w, view, data};
    char channel[RKEY_CAP];
    size_t len = simai_redis_key(channel, 'm', stream, n);
    return simai_redis_notified(s, q.i, channel, len, try_read, &q, deadline);
}

int simai_redis_stream_info(simai_store *s, const char *stream, size_t n, simai_stream_state *st)
{
    char sk[RKEY_CAP], ek[RKEY_CAP], bk[RKEY_CAP];
    struct cmd cmds[3] = {
        {6, {STR("HMGET"), KEY(bk, 'b', stream, n), STR("maxlen"), STR("policy"),
             STR("start"), STR("dropped")}},
        {2, {STR("LLEN"), KEY(sk, 's', stream, n)}},
        {2, {STR("GET"), KEY(ek, 'e', stream, n)}},
    };
    struct simai_reply r[3], *b;
    int i = simai_redis_shard(s, stream, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 3, cmds, r);
    simai_redis_unlock(s, i);
    if (rc)
        return rc;
    b = r[0].elem;
    st->maxlen = simai_redis_int(&b[0]);
    st->policy = b[1].type != SIMAI_BULK ? 0 : !strcmp(b[1].str, "block") ? 1 : 2;
    st->start = simai_redis_int(&b[2]);
    st->dropped = simai_redis_int(&b[3]);
    st->length = st->start + r[1].integer;
    st->closed = r[2].type == SIMAI_BULK;
    if (st->closed && simai_redis_int(&r[2]) < st->length)
        st->length = simai_redis_int(&r[2]);
    for (int k = 0; k < 3; k++)
        simai_reply_free(&r[k]);
    return SIMAI_OK;
}

/* Record the length at closing: entries past it (late appends) do not count. */
int simai_redis_stream_close(simai_store *s, const char *stream, size_t n)
{
    char sk[RKEY_CAP], ek[RKEY_CAP], bk[RKEY_CAP], mk[RKEY_CAP], ak[RKEY_CAP];
    struct cmd cmds[3] = {
        {6, {STR("EVAL"), STR(CLOSE), STR("3"), KEY(sk, 's', stream, n),
             KEY(ek, 'e', stream, n), KEY(bk, 'b', stream, n)}},
        {3, {STR("PUBLISH"), KEY(mk, 'm', stream, n), STR("1")}},
        {3, {STR("PUBLISH"), KEY(ak, 'a', stream, n), STR("1")}},
    };
    struct simai_reply r[3];
    int i = simai_redis_shard(s, stream, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 3, cmds, r);
    simai_redis_unlock(s, i);
    for (int k = 0; !rc && k < 3; k++)
        simai_reply_free(&r[k]);
    return rc;
}

/* redis.py's _CREATE_SCRIPT: give a stream bounds unless it has some (returned) or holds
 * values (their count). */
static const char CREATE[] =
    "\nlocal have = redis.call('HMGET', KEYS[2], 'maxlen', 'policy')\n"
    "if have[1] then return have end\n"
    "local n = redis.call('LLEN', KEYS[1])\n"
    "if n > 0 then return n end\n"
    "redis.call('HSET', KEYS[2], 'maxlen', ARGV[1], 'policy', ARGV[2], 'start', 0, 'dropped', "
    "0)\n"
    "return {ARGV[1], ARGV[2]}\n";

int simai_redis_stream_create(simai_store *s, const char *stream, size_t n,
                              const simai_stream_state *want, simai_stream_state *have)
{
    char sk[RKEY_CAP], bk[RKEY_CAP], maxlen[32];
    struct cmd eval = {
        7, {STR("EVAL"), STR(CREATE), STR("2"), KEY(sk, 's', stream, n), KEY(bk, 'b', stream, n),
            ARG(maxlen, (size_t)sprintf(maxlen, "%" PRId64, want->maxlen)),
            STR(want->policy == 2 ? "drop_oldest" : "block")}};
    struct simai_reply r;
    int i = simai_redis_shard(s, stream, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 1, &eval, &r);
    simai_redis_unlock(s, i);
    if (rc)
        return rc;
    if (r.type == SIMAI_INT)
        have->length = r.integer;
    else if (r.type == SIMAI_ARRAY && r.len == 2 && r.elem[1].type == SIMAI_BULK) {
        have->maxlen = simai_redis_int(&r.elem[0]);
        have->policy = strcmp(r.elem[1].str, "drop_oldest") ? 1 : 2;
    } else
        rc = simai_fail(SIMAI_ERR_CORRUPT, "stream '%s' in %s: its bounds are damaged", stream,
                        s->url);
    simai_reply_free(&r);
    return rc;
}

/* DEL the keys of a SCAN reply, a few per command. */
static int delete_found(simai_store *s, int i, const struct simai_reply *found)
{
    int rc = SIMAI_OK;
    for (size_t k = 0; !rc && k < found->len;) {
        struct cmd del = {1, {STR("DEL")}};
        struct simai_reply r;
        while (k < found->len && del.argc < 12) {
            del.argv[del.argc++] = ARG(found->elem[k].str, found->elem[k].len);
            k++;
        }
        if (!(rc = simai_redis_run(s, i, 1, &del, &r)))
            simai_reply_free(&r);
    }
    return rc;
}

/* redis.py _delete_stream: its entries' chunks (simai:d:STREAM\0*), then its list, closed
 * mark, bounds, groups and chunk pointers; *existed if any of the latter was there. */
int simai_redis_stream_delete(simai_store *s, const char *stream, size_t n, int *existed)
{
    char dk[RKEY_CAP], pattern[2 * RKEY_CAP + 2], cursor[32] = "0", k[5][RKEY_CAP];
    static const char kinds[5] = {'s', 'e', 'b', 'g', 'x'};
    size_t len = simai_redis_key(dk, 'd', stream, n), np = 0;
    struct cmd del = {6, {STR("DEL")}};
    struct simai_reply r;
    int i = simai_redis_shard(s, stream, n), rc = SIMAI_OK;
    for (size_t j = 0; j < len; j++) { /* glob-escaped */
        if (dk[j] && strchr("\\*?[]", dk[j]))
            pattern[np++] = '\\';
        pattern[np++] = dk[j];
    }
    pattern[np++] = 0;
    pattern[np++] = '*';
    for (int j = 0; j < 5; j++)
        del.argv[1 + j] = KEY(k[j], kinds[j], stream, n);
    simai_redis_lock(s, i);
    do {
        struct cmd scan = {6, {STR("SCAN"), STR(cursor), STR("MATCH"), ARG(pattern, np),
                               STR("COUNT"), STR("1000")}};
        if ((rc = simai_redis_run(s, i, 1, &scan, &r)))
            break;
        snprintf(cursor, sizeof cursor, "%s", r.elem[0].str);
        rc = delete_found(s, i, &r.elem[1]);
        simai_reply_free(&r);
    } while (!rc && strcmp(cursor, "0"));
    if (!rc && !(rc = simai_redis_run(s, i, 1, &del, &r))) {
        *existed = r.integer > 0;
        simai_reply_free(&r);
    }
    simai_redis_unlock(s, i);
    return rc;
}

int simai_redis_position(simai_store *s, const char *stream, size_t n, const char *group,
                         size_t gn, int64_t *index, int *found)
{
    char gk[RKEY_CAP];
    struct cmd get = {3, {STR("HGET"), KEY(gk, 'g', stream, n), ARG(group, gn)}};
    struct simai_reply r;
    int i = simai_redis_shard(s, stream, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 1, &get, &r);
    simai_redis_unlock(s, i);
    if (rc)
        return rc;
    *found = r.type == SIMAI_BULK;
    *index = simai_redis_int(&r);
    simai_reply_free(&r);
    return SIMAI_OK;
}

/* Record the position and tell producers waiting on a full "block" stream. */
int simai_redis_set_position(simai_store *s, const char *stream, size_t n, const char *group,
                             size_t gn, int64_t index)
{
    char gk[RKEY_CAP], ak[RKEY_CAP], pos[32];
    struct cmd cmds[2] = {
        {4, {STR("HSET"), KEY(gk, 'g', stream, n), ARG(group, gn),
             ARG(pos, (size_t)sprintf(pos, "%" PRId64, index))}},
        {3, {STR("PUBLISH"), KEY(ak, 'a', stream, n), STR("1")}},
    };
    struct simai_reply r[2];
    int i = simai_redis_shard(s, stream, n), rc;
    simai_redis_lock(s, i);
    rc = simai_redis_run(s, i, 2, cmds, r);
    simai_redis_unlock(s, i);
    for (int k = 0; !rc && k < 2; k++)
        simai_reply_free(&r[k]);
    return rc;
}


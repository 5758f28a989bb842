/* The store's public API for streams: append, read an entry by index, state, close.
 * Arguments are checked here, once; the backend (backend.h) does the rest. */
#include <inttypes.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "internal.h"
#include "text.h"

static int append(simai_store *s, const char *stream, struct simai_head *h, const void *data,
                  int flags, double timeout, int64_t *index)
{
    struct simai_src src = {data, flags & SIMAI_COLUMN_MAJOR};
    int64_t at = -1;
    double deadline;
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)) ||
        (rc = simai_deadline(timeout, &deadline)))
        return rc;
    if (!data && h->nbytes)
        return simai_fail(SIMAI_ERR_INVALID, "data must not be NULL");
    rc = s->ops->append(s, stream, n, h, &src, deadline, &at);
    if (rc == SIMAI_ERR_TIMEOUT)
        simai_fail(rc,
                   "stream '%s' stayed full for %.3g s in %s: its consumer groups did not "
                   "catch up (policy 'block')",
                   stream, timeout, s->url);
    if (!rc && index)
        *index = at;
    return rc;
}

int simai_append_bytes(simai_store *s, const char *stream, const void *data, size_t n,
                       double timeout, int64_t *index)
{
    struct simai_head h;
    simai_head_plain(&h, SIMAI_KIND_BYTES, n);
    return append(s, stream, &h, data, 0, timeout, index);
}

int simai_append_json(simai_store *s, const char *stream, const char *json, double timeout,
                      int64_t *index)
{
    struct simai_head h;
    int rc;
    if (!json)
        return simai_fail(SIMAI_ERR_INVALID, "json must not be NULL");
    if ((rc = simai_check_json(json, strlen(json))))
        return rc;
    simai_head_plain(&h, SIMAI_KIND_JSON, strlen(json));
    return append(s, stream, &h, json, 0, timeout, index);
}

int simai_append_array(simai_store *s, const char *stream, const char *dtype, int ndim,
                       const uint64_t *shape, const void *data, int flags, double timeout,
                       int64_t *index)
{
    struct simai_head h;
    int rc = simai_head_array(&h, dtype, ndim, shape);
    return rc ? rc : append(s, stream, &h, data, flags, timeout, index);
}

static int read_entry(simai_store *s, const char *stream, int64_t index, double timeout,
                      const struct simai_want *w, simai_view **view, const void **data)
{
    double deadline;
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)) ||
        (rc = simai_deadline(timeout, &deadline)))
        return rc;
    if (index < 0)
        return simai_fail(SIMAI_ERR_INVALID, "index must be >= 0, not %" PRId64, index);
    if (w->info) /* all zeros unless a header was read */
        memset(w->info, 0, sizeof *w->info);
    rc = s->ops->stream_get(s, stream, n, index, deadline, w, view, data);
    if (rc == SIMAI_ERR_TIMEOUT)
        simai_fail(rc, "stream '%s' had no entry %" PRId64 " within %.3g s in %s", stream,
                   index, timeout, s->url);
    return rc;
}

int simai_stream_get(simai_store *s, const char *stream, int64_t index, double timeout,
                     void *buf, size_t cap, simai_info *info)
{
    struct simai_want w = {.kind = -1, .buf = buf, .cap = cap, .info = info};
    if (!buf && cap)
        return simai_fail(SIMAI_ERR_INVALID, "buf is NULL but cap is %zu", cap);
    return read_entry(s, stream, index, timeout, &w, NULL, NULL);
}

int simai_stream_view(simai_store *s, const char *stream, int64_t index, double timeout,
                      simai_view **view, const void **data, simai_info *info)
{
    struct simai_want w = {.kind = -1, .view = 1, .info = info};
    if (!view || !data)
        return simai_fail(SIMAI_ERR_INVALID, "view and data must not be NULL");
    *view = NULL;
    *data = NULL;
    return read_entry(s, stream, index, timeout, &w, view, data);
}

int simai_stream_info(simai_store *s, const char *stream, simai_stream_state *state)
{
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)))
        return rc;
    if (!state)
        return simai_fail(SIMAI_ERR_INVALID, "state must not be NULL");
    memset(state, 0, sizeof *state);
    return s->ops->stream_info(s, stream, n, state);
}

int simai_stream_close(simai_store *s, const char *stream)
{
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)))
        return rc;
    return s->ops->stream_close(s, stream, n);
}

/* --- consumer groups (Python: store.stream(name, group=...)) ------------------------------ */

int simai_group_position(simai_store *s, const char *stream, const char *group, int64_t *index)
{
    size_t n, gn;
    int found, rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)) ||
        (rc = simai_check_key(group, "group name", &gn)))
        return rc;
    if (!index)
        return simai_fail(SIMAI_ERR_INVALID, "index must not be NULL");
    rc = s->ops->position(s, stream, n, group, gn, index, &found);
    if (!rc && !found)
        *index = 0;
    return rc;
}

/* Acknowledge what came before *index, then read it as `w` asks; skip what a bound trimmed. */
static int group_read(simai_store *s, const char *stream, const char *group, int64_t *index,
                      double timeout, const struct simai_want *w)
{
    simai_stream_state st;
    size_t n, gn;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)) ||
        (rc = simai_check_key(group, "group name", &gn)))
        return rc;
    if (!index || *index < 0)
        return simai_fail(SIMAI_ERR_INVALID, "index must point to an index >= 0");
    if (!w->buf && w->cap)
        return simai_fail(SIMAI_ERR_INVALID, "buf is NULL but cap is %zu", w->cap);
    for (;;) {
        if ((rc = s->ops->set_position(s, stream, n, group, gn, *index)) ||
            (rc = read_entry(s, stream, *index, timeout, w, NULL, NULL)) != SIMAI_ERR_TRIMMED)
            return rc;
        if ((rc = s->ops->stream_info(s, stream, n, &st)))
            return rc;
        if (st.start <= *index) /* gone while it was read: no later start to go on from */
            return SIMAI_ERR_TRIMMED;
        *index = st.start;
    }
}

int simai_group_get(simai_store *s, const char *stream, const char *group, int64_t *index,
                    double timeout, void *buf, size_t cap, simai_info *info)
{
    struct simai_want w = {.kind = -1, .buf = buf, .cap = cap, .info = info};
    return group_read(s, stream, group, index, timeout, &w);
}

int simai_group_get_array(simai_store *s, const char *stream, const char *group,
                          int64_t *index, double timeout, const char *dtype, int ndim,
                          const uint64_t *shape, void *buf, int flags)
{
    struct simai_want w;
    int rc = simai_want_array(&w, dtype, ndim, shape, buf, flags);
    return rc ? rc : group_read(s, stream, group, index, timeout, &w);
}

/* --- declaring and deleting (Python: create_stream, delete_stream) -------------------------- */

static const char *policy_name(int policy)
{
    return policy == SIMAI_POLICY_BLOCK         ? "block"
           : policy == SIMAI_POLICY_DROP_OLDEST ? "drop_oldest"
                                                : "none";
}

int simai_stream_create(simai_store *s, const char *stream, int64_t maxlen, const char *policy)
{
    simai_stream_state want = {0}, have = {0};
    size_t n;
    int rc = simai_usable(s);
    if (rc || (rc = simai_check_key(stream, "stream name", &n)))
        return rc;
    if (!policy || !strcmp(policy, "block"))
        want.policy = SIMAI_POLICY_BLOCK;
    else if (!strcmp(policy, "drop_oldest"))
        want.policy = SIMAI_POLICY_DROP_OLDEST;
    else
        return simai_fail(SIMAI_ERR_INVALID,
                          "policy must be \"block\" or \"drop_oldest\", not \"%.64s\"", policy);
    if (maxlen < 0)
        return simai_fail(SIMAI_ERR_INVALID,
                          "maxlen must be >= 1 (or 0: unbounded), not %" PRId64, maxlen);
    want.maxlen = maxlen;
    if (!maxlen) { /* unbounded: what an undeclared stream is; only bounds contradict it */
        if ((rc = s->ops->stream_info(s, stream, n, &have)))
            return rc;
        if (have.maxlen)
            return simai_fail(SIMAI_ERR_INVALID,
                              "stream '%s' is bounded to maxlen=%" PRId64 "; it cannot be "
                              "declared unbounded",
                              stream, have.maxlen);
        return SIMAI_OK;
    }
    if ((rc = s->ops->stream_create(s, stream, n, &want, &have)))
        return rc;
    if (!have.maxlen)
        return simai_fail(SIMAI_ERR_INVALID,
                          "stream '%s' already holds %" PRId64 " values appended without "
                          "bounds; declare it with simai_stream_create before the first append",
                          stream, have.length);
    if (have.maxlen != want.maxlen || have.policy != want.policy)
        return simai_fail(SIMAI_ERR_INVALID,
                          "stream '%s' is already declared with maxlen=%" PRId64
                          ", policy='%s', not maxlen=%" PRId64 ", policy='%s'",
                          stream, have.maxlen, policy_name(have.policy), want.maxlen,
                          policy_name(want.policy));
    return SIMAI_OK;
}

int simai_stream_delete(simai_store *s, const char *stream, int *existed)
{
    int was = 0;
    size_t n;
    int rc = simai_usable(s);
    if (existed)
        *existed = 0;
    if (rc || (rc = simai_check_key(stream, "stream name", &n)))
        return rc;
    rc = s->ops->stream_delete(s, stream, n, &was);
    if (!rc && existed)
        *existed = was;
    return rc;
}

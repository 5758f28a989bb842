/* The file:// backend's streams and consumer groups, laid out as file.py lays them out (see
 * backend_file.c): entries claimed with link(2); a bounded stream's appends hold its flock. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend_file.h"
#include "error.h"
#include "internal.h"
#include "paths.h"

enum { BLOCK = 1, DROP_OLDEST = 2 };

/* The stream's directory (made if `create`); -1 with SIMAI_OK when it has none. */
static int stream_dir(simai_store *s, const char *stream, size_t n, int create, int *fd)
{
    char name[NAME_CAP];
    simai_file_name(stream, n, name);
    if ((*fd = openat(F(s)->streams, name, DIRFLAGS)) >= 0 || errno != ENOENT)
        return *fd >= 0 ? SIMAI_OK : simai_file_fail(s->url, "cannot open a stream");
    if (!create)
        return simai_file_gone(s);
    if (mkdirat(F(s)->streams, name, 0700) && errno != EEXIST)
        return simai_file_fail(s->url, "cannot make a stream");
    if ((*fd = openat(F(s)->streams, name, DIRFLAGS)) < 0)
        return simai_file_fail(s->url, "cannot open a stream");
    return SIMAI_OK;
}

static int64_t scan_len(int d)
{
    int64_t top = -1;
    struct dirent *de;
    int fd = dup(d);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir)
        return fd >= 0 ? (close(fd), 0) : 0;
    rewinddir(dir);
    while ((de = readdir(dir))) {
        const char *p = de->d_name;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p != de->d_name && !*p && strtoll(de->d_name, NULL, 10) > top)
            top = strtoll(de->d_name, NULL, 10);
    }
    closedir(dir);
    return top + 1;
}

/* A bounded stream's maxlen and policy from its "bounds" file; maxlen 0 if unbounded. */
static void read_bounds(int d, simai_stream_state *st)
{
    char text[256], *p;
    if (simai_file_read_small(d, "bounds", text, sizeof text) < 0)
        return;
    if ((p = strstr(text, "\"maxlen\":")))
        st->maxlen = strtoll(p + 9, NULL, 10);
    st->policy = strstr(text, "\"drop_oldest\"") ? DROP_OLDEST : BLOCK;
}

/* head, start, dropped from "state" (<qqq); 0 when there is none. */
static int read_state(int d, simai_stream_state *st)
{
    char raw[32];
    int64_t v[3];
    if (simai_file_read_small(d, "state", raw, sizeof raw) != 24)
        return 0;
    memcpy(v, raw, sizeof v); /* little-endian, as this library's targets are */
    st->length = v[0];
    st->start = v[1];
    st->dropped = v[2];
    return 1;
}

/* The lowest consumer group position; 0 when the stream has no group. */
static int slowest(int d, int64_t *lowest)
{
    char text[SIMAI_MAX_KEY_BYTES + 32];
    struct dirent *de;
    int any = 0, g = openat(d, "groups", DIRFLAGS);
    DIR *dir = g < 0 ? NULL : fdopendir(g);
    if (!dir)
        return g >= 0 ? (close(g), 0) : 0;
    while ((de = readdir(dir)))
        if (de->d_name[0] != '.' && simai_file_read_small(g, de->d_name, text, sizeof text) > 0) {
            int64_t pos = strtoll(text, NULL, 10);
            if (!any || pos < *lowest)
                *lowest = pos;
            any = 1;
        }
    closedir(dir);
    return any;
}

static void index_name(int64_t i, char *out)
{
    snprintf(out, 32, "%012" PRId64, i);
}

/* Link tmp/`tmp` as the first free index from *index on. */
static int claim(simai_store *s, int d, const char *tmp, int64_t *index)
{
    char name[32];
    for (;; ++*index) {
        index_name(*index, name);
        if (!linkat(F(s)->tmp, tmp, d, name, 0))
            return SIMAI_OK;
        if (errno != EEXIST)
            return simai_file_fail(s->url, "cannot append");
    }
}

static int closed_fail(const char *stream)
{
    return simai_fail(SIMAI_ERR_STREAM_CLOSED,
                      "stream '%s' was closed; no more values can be appended", stream);
}

/* One try at a bounded append, holding the stream's lock (file.py _append_locked). */
static int append_locked(simai_store *s, int d, const char *stream, const simai_stream_state *b,
                         const char *tmp, int64_t *index)
{
    simai_stream_state st = *b;
    int64_t floor, low = 0, head, new_start;
    char name[32], state[64];
    int rc;
    if (simai_file_exists_in(d, "closed"))
        return closed_fail(stream);
    read_state(d, &st);
    floor = slowest(d, &low) && low > st.start ? low : st.start;
    if (st.policy == BLOCK && st.length - floor >= st.maxlen)
        return SIMAI_WAIT_AGAIN;
    head = st.length;
    if ((rc = claim(s, d, tmp, &head)))
        return rc;
    *index = head++;
    new_start = head - st.maxlen;
    if (st.policy == BLOCK && floor < new_start)
        new_start = floor;
    if (new_start > st.start) {
        for (int64_t i = st.start; i < new_start; i++) {
            index_name(i, name);
            unlinkat(d, name, 0);
        }
        if (st.policy == DROP_OLDEST) {
            int64_t from = st.start > floor ? st.start : floor;
            st.dropped += new_start > from ? new_start - from : 0;
        }
        st.start = new_start;
    }
    {
        int64_t v[3] = {head, st.start, st.dropped};
        if ((rc = simai_file_stage(s, v, sizeof v, NULL, 0, state)))
            return rc;
    }
    return simai_file_publish(s, state, d, "state");
}

static int append_bounded(simai_store *s, int d, const char *stream, const simai_stream_state *b,
                          const char *tmp, double deadline, int64_t *index)
{
    double pause = SIMAI_FIRST_PAUSE;
    int rc, lock = openat(d, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock < 0)
        return simai_file_fail(s->url, "cannot lock a stream");
    for (;;) {
        if (flock(lock, LOCK_EX)) {
            rc = simai_file_fail(s->url, "cannot lock a stream");
            break;
        }
        rc = append_locked(s, d, stream, b, tmp, index);
        flock(lock, LOCK_UN);
        if (rc != SIMAI_WAIT_AGAIN || (rc = simai_backoff(&pause, deadline)))
            break;
    }
    close(lock);
    return rc;
}

int simai_file_append(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                      const struct simai_src *src, double deadline, int64_t *index)
{
    char tmp[64], header[SIMAI_MAX_HEADER];
    simai_stream_state b = {0};
    const void *payload;
    void *copy;
    int d, rc = stream_dir(s, stream, n, 1, &d);
    if (rc)
        return rc;
    read_bounds(d, &b);
    if (!b.maxlen && simai_file_exists_in(d, "closed")) {
        close(d);
        return closed_fail(stream);
    }
    if (!(rc = simai_seal(h, src, &payload, &copy))) {
        simai_head_write(h, (uint8_t *)header);
        rc = simai_file_stage(s, header, h->offset, payload, h->nbytes, tmp);
        free(copy);
    }
    if (!rc) {
        if (b.maxlen)
            rc = append_bounded(s, d, stream, &b, tmp, deadline, index);
        else {
            *index = scan_len(d);
            rc = claim(s, d, tmp, index);
        }
        unlinkat(F(s)->tmp, tmp, 0);
    }
    close(d);
    return rc;
}

int simai_file_stream_get(simai_store *s, const char *stream, size_t n, int64_t index,
                          double deadline, const struct simai_want *w, simai_view **view,
                          const void **data)
{
    char name[32], what[SIMAI_MAX_KEY_BYTES + 300];
    double pause = SIMAI_FIRST_PAUSE;
    simai_stream_state st;
    uint8_t *buf;
    size_t len;
    int d, rc;
    index_name(index, name);
    snprintf(what, sizeof what, "stream '%s' entry %" PRId64 " in %s", stream, index, s->url);
    for (;;) {
        if ((rc = stream_dir(s, stream, n, 0, &d)))
            return rc;
        for (int again = 0; d >= 0 && again < 2; again++) {
            rc = simai_file_read(s, d, name, SIZE_MAX, &buf, &len);
            if (rc != SIMAI_ERR_NOT_FOUND) {
                close(d);
                return rc ? rc : simai_deliver_whole(buf, len, w, view, data, what);
            }
            memset(&st, 0, sizeof st);
            if (read_state(d, &st) && index < st.start) {
                close(d);
                return simai_fail(SIMAI_ERR_TRIMMED,
                                  "stream '%s' entry %" PRId64 " was trimmed: the stream now "
                                  "starts at %" PRId64,
                                  stream, index, st.start);
            }
            if (!simai_file_exists_in(d, "closed"))
                break;
            if (again) {
                int64_t length = st.length ? st.length : scan_len(d);
                close(d);
                return simai_fail(SIMAI_ERR_ENDED,
                                  "stream '%s' was closed after %" PRId64 " values", stream,
                                  length);
            }
        }
        if (d >= 0)
            close(d);
        if ((rc = simai_backoff(&pause, deadline)))
            return rc;
    }
}

int simai_file_stream_info(simai_store *s, const char *stream, size_t n, simai_stream_state *st)
{
    int d, rc = stream_dir(s, stream, n, 0, &d);
    if (rc || d < 0)
        return rc;
    read_bounds(d, st);
    if (!read_state(d, st))
        st->length = scan_len(d);
    st->closed = simai_file_exists_in(d, "closed");
    close(d);
    return SIMAI_OK;
}

int simai_file_stream_close(simai_store *s, const char *stream, size_t n)
{
    int fd, d, rc = stream_dir(s, stream, n, 1, &d);
    if (rc)
        return rc;
    fd = openat(d, "closed", NEW, 0600);
    rc = fd < 0 && errno != EEXIST ? simai_file_fail(s->url, "cannot close a stream") : SIMAI_OK;
    if (fd >= 0)
        close(fd);
    close(d);
    return rc;
}

/* file.py _create_stream: "bounds" is linked into place once, by whichever process declares
 * first; the stream must hold no value yet. */
int simai_file_stream_create(simai_store *s, const char *stream, size_t n,
                             const simai_stream_state *want, simai_stream_state *have)
{
    char text[128], tmp[64];
    int len, d, rc = stream_dir(s, stream, n, 1, &d);
    if (rc)
        return rc;
    read_bounds(d, have);
    if (!have->maxlen && !(have->length = scan_len(d))) {
        len = snprintf(text, sizeof text, "{\"maxlen\": %" PRId64 ", \"policy\": \"%s\"}",
                       want->maxlen, want->policy == DROP_OLDEST ? "drop_oldest" : "block");
        if (!(rc = simai_file_stage(s, text, (size_t)len, NULL, 0, tmp))) {
            /* EEXIST: another process declared it meanwhile; its bounds are compared */
            if (linkat(F(s)->tmp, tmp, d, "bounds", 0) && errno != EEXIST)
                rc = simai_file_fail(s->url, "cannot declare a stream");
            unlinkat(F(s)->tmp, tmp, 0);
        }
        if (!rc)
            read_bounds(d, have);
    }
    close(d);
    return rc;
}

/* file.py _delete_stream: the stream's whole directory */
int simai_file_stream_delete(simai_store *s, const char *stream, size_t n, int *existed)
{
    char name[NAME_CAP];
    simai_file_name(stream, n, name);
    *existed = !simai_rmtree_at(F(s)->streams, name);
    if (*existed || errno == ENOENT)
        return *existed ? SIMAI_OK : simai_file_gone(s);
    return simai_file_fail(s->url, "cannot delete a stream");
}

/* groups/NAME holds "POSITION\nGROUP" (file.py _set_position). */
int simai_file_position(simai_store *s, const char *stream, size_t n, const char *group,
                        size_t gn, int64_t *index, int *found)
{
    char name[NAME_CAP], text[SIMAI_MAX_KEY_BYTES + 32];
    int g, d, rc = stream_dir(s, stream, n, 0, &d);
    *found = 0;
    if (rc || d < 0)
        return rc;
    simai_file_name(group, gn, name);
    if ((g = openat(d, "groups", DIRFLAGS)) >= 0) {
        *found = simai_file_read_small(g, name, text, sizeof text) > 0;
        *index = *found ? strtoll(text, NULL, 10) : 0;
        close(g);
    }
    close(d);
    return SIMAI_OK;
}

int simai_file_set_position(simai_store *s, const char *stream, size_t n, const char *group,
                            size_t gn, int64_t index)
{
    char name[NAME_CAP], text[SIMAI_MAX_KEY_BYTES + 32], tmp[64];
    size_t len;
    int g = -1, d, rc = stream_dir(s, stream, n, 1, &d);
    if (rc)
        return rc;
    simai_file_name(group, gn, name);
    len = (size_t)snprintf(text, sizeof text, "%" PRId64 "\n%.*s", index, (int)gn, group);
    if ((mkdirat(d, "groups", 0700) && errno != EEXIST) ||
        (g = openat(d, "groups", DIRFLAGS)) < 0)
        rc = simai_file_fail(s->url, "cannot record a group's position");
    else if (!(rc = simai_file_stage(s, text, len, NULL, 0, tmp)))
        rc = simai_file_publish(s, tmp, g, name);
    if (g >= 0)
        close(g);
    close(d);
    return rc;
}


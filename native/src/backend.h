/* The backends behind a simai_store: one table of operations per URL scheme (local, file,
 * redis), each in its own backend_*.c. store.c and stream.c check the caller's arguments and
 * build headers, then call the table; a backend gets valid keys (with their length), sealed
 * nothing yet (it computes the checksum as it writes), and monotonic deadlines (< 0: none).
 * A backend returns SIMAI_ERR_TIMEOUT without a message: the caller words it. */
#ifndef SIMAI_BACKEND_H
#define SIMAI_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "entry.h"

struct simai_keylist {
    char **keys;
    size_t count, cap;
};

/* Add a copy of name[0..n) to the list. */
int simai_keylist_add(struct simai_keylist *l, const void *name, size_t n);

struct simai_backend {
    void (*close)(simai_store *s);
    /* SIMAI_ERR_CLOSED once the store was destroyed, else SIMAI_OK */
    int (*usable)(simai_store *s);
    int (*put)(simai_store *s, const char *key, size_t n, struct simai_head *h,
               const struct simai_src *src);
    /* Deliver the value of `key` as `w` asks (SIMAI_ERR_NOT_FOUND with a message if none);
     * with w->view, *view and *data are the view. */
    int (*get)(simai_store *s, const char *key, size_t n, const struct simai_want *w,
               simai_view **view, const void **data);
    int (*exists)(simai_store *s, const char *key, size_t n, int *exists);
    int (*del)(simai_store *s, const char *key, size_t n, int *existed);
    int (*keys)(simai_store *s, const char *prefix, struct simai_keylist *l);
    int (*wait)(simai_store *s, const char *key, size_t n, double deadline);
    int (*append)(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                  const struct simai_src *src, double deadline, int64_t *index);
    /* Entry `index`, as get; SIMAI_ERR_ENDED / SIMAI_ERR_TRIMMED with their messages. */
    int (*stream_get)(simai_store *s, const char *stream, size_t n, int64_t index,
                      double deadline, const struct simai_want *w, simai_view **view,
                      const void **data);
    int (*stream_info)(simai_store *s, const char *stream, size_t n, simai_stream_state *st);
    int (*stream_close)(simai_store *s, const char *stream, size_t n);
    /* Give a stream the bounds in *want (maxlen >= 1, policy) if it has none and holds no
     * value; either way fill *have with the bounds it has then (maxlen 0: none) and, without
     * bounds, its length. stream.c compares them. */
    int (*stream_create)(simai_store *s, const char *stream, size_t n,
                         const simai_stream_state *want, simai_stream_state *have);
    /* Delete a stream's values, state and groups; *existed says whether there were any. */
    int (*stream_delete)(simai_store *s, const char *stream, size_t n, int *existed);
    /* Remove the whole store; NULL where Python has no destroy (redis). */
    int (*destroy)(simai_store *s);
    /* A consumer group's recorded position (*found 0 if none), and recording it. */
    int (*position)(simai_store *s, const char *stream, size_t n, const char *group, size_t gn,
                    int64_t *index, int *found);
    int (*set_position)(simai_store *s, const char *stream, size_t n, const char *group,
                        size_t gn, int64_t index);
};

/* Open each kind of store: fill s->ops and s->impl (s->url is set). */
int simai_local_open(simai_store *s);
int simai_file_open(simai_store *s);
int simai_redis_open(simai_store *s);

/* The node-local backend's streams (backend_local_stream.c). */
int simai_local_append(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                       const struct simai_src *src, double deadline, int64_t *index);
int simai_local_stream_get(simai_store *s, const char *stream, size_t n, int64_t index,
                           double deadline, const struct simai_want *w, simai_view **view,
                           const void **data);
int simai_local_stream_info(simai_store *s, const char *stream, size_t n,
                            simai_stream_state *st);
int simai_local_stream_close(simai_store *s, const char *stream, size_t n);
int simai_local_stream_create(simai_store *s, const char *stream, size_t n,
                              const simai_stream_state *want, simai_stream_state *have);
int simai_local_stream_delete(simai_store *s, const char *stream, size_t n, int *existed);
int simai_local_position(simai_store *s, const char *stream, size_t n, const char *group,
                         size_t gn, int64_t *index, int *found);
int simai_local_set_position(simai_store *s, const char *stream, size_t n, const char *group,
                             size_t gn, int64_t index);

/* --- helpers of the backends that hold whole entries (file, redis) ----------------------- */

/* The payload to send for header `h` from `src`, with h->checksum computed: src->data, or a
 * row-major copy of a column-major array in *tmp (freed by the caller; NULL if none). */
int simai_seal(struct simai_head *h, const struct simai_src *src, const void **payload,
               void **tmp);

/* Deliver a whole entry (header and payload, `len` bytes, malloc'd; for w->head_only, the
 * header is enough) as `w` asks. Takes `buf`: a view keeps it, else it is freed. `what`
 * ("key 'k' in URL") prefixes damage messages. */
int simai_deliver_whole(uint8_t *buf, size_t len, const struct simai_want *w, simai_view **view,
                        const void **data, const char *what);

/* A wait's check that `key` exists (ops->exists): SIMAI_OK once it does, SIMAI_WAIT_AGAIN
 * before. `arg` is a struct simai_lookup. */
struct simai_lookup {
    simai_store *s;
    const char *key;
    size_t n;
};
int simai_appeared(void *arg);

/* check(arg) until it returns something other than SIMAI_WAIT_AGAIN, polling with
 * simai_backoff; SIMAI_ERR_TIMEOUT at the deadline. */
int simai_poll(int (*check)(void *), void *arg, double deadline);

/* Sleep for *pause seconds (at most until `deadline`), then double *pause up to 50 ms;
 * SIMAI_ERR_TIMEOUT once the deadline passed. For backends that poll. */
#define SIMAI_FIRST_PAUSE 0.001
int simai_backoff(double *pause, double deadline);

#endif

/* The parts of the redis:// backend its files share: the store's shards, its commands, its
 * waits and its chunks (redis_shards.c); values are in backend_redis.c, streams in
 * backend_redis_stream.c. */
#ifndef SIMAI_BACKEND_REDIS_H
#define SIMAI_BACKEND_REDIS_H

#include <pthread.h>
#include <string.h>

#include "backend.h"
#include "resp.h"

#define SIMAI_REDIS_NS "simai:"
/* a Redis key: namespace, kind, ":", name */
#define RKEY_CAP (sizeof SIMAI_REDIS_NS + 2 + SIMAI_MAX_KEY_BYTES)

struct shard {
    char host[256];
    int port;
    pthread_mutex_t lock; /* held for one call's commands on `conn`, and to take `idle` */
    struct simai_conn conn;
    struct simai_conn idle; /* a subscriber connection kept for the next wait */
};

struct rstore {
    char *user, *password;
    struct simai_tls *tls; /* rediss://: the CA and this client's certificate; else NULL */
    int n;
    struct shard sh[];
};

#define R(s) ((struct rstore *)(s)->impl)

/* A command: up to 12 arguments. */
struct cmd {
    int argc;
    struct simai_arg argv[12];
};

#define ARG(p, n) ((struct simai_arg){(p), (n), NULL, 0})
#define STR(text) ARG(text, strlen(text))
/* the Redis key of `name` of this kind, written into buf, as an argument */
#define KEY(buf, kind, name, n) ARG(buf, simai_redis_key(buf, kind, name, n))

/* What simai_redis_run returns when Redis refused a command by its access rules (NOPERM):
 * the backend's table turns it into SIMAI_ERR_PERMISSION naming the key and the operation. */
#define SIMAI_REDIS_DENIED (-2)

/* Parse the URL in s->url (cutting a password out of it, adding $SIMAI_STORE_USER when it
 * names no user) into s->impl, and load the TLS files of a rediss:// URL; connect nothing. */
int simai_redis_parse(simai_store *s);
void simai_redis_free(simai_store *s);

/* The shard of key or stream `name`: crc32(name) % shards, as redis.py's shard_of. */
int simai_redis_shard(simai_store *s, const char *name, size_t n);
/* "simai:" KIND ":" NAME into out (RKEY_CAP bytes); its length. */
size_t simai_redis_key(char *out, char kind, const char *name, size_t n);
/* An integer reply, or a bulk string holding one (0 for nil). */
int64_t simai_redis_int(const struct simai_reply *r);

void simai_redis_lock(simai_store *s, int i);
void simai_redis_unlock(simai_store *s, int i);
/* Open a connection to shard i (messages name the store, and hint at a missing password). */
int simai_redis_connect(simai_store *s, int i, struct simai_conn *c);
/* Send `count` commands to shard i (its lock held) in one round trip and read their replies
 * (all nil, safe to free, after a failure). A failure that leaves replies unread closes the
 * connection; the next call reconnects. An error reply becomes SIMAI_ERR_IO saying what
 * Redis said, or SIMAI_REDIS_DENIED for a command the user may not run (NOPERM). */
int simai_redis_run(simai_store *s, int i, int count, const struct cmd *cmds,
                    struct simai_reply *out);
/* check(arg) until it returns something other than SIMAI_WAIT_AGAIN, woken by messages on
 * `channel` of shard i (subscribed on a connection of its own, then re-checked, so nothing
 * published in between is missed); SIMAI_ERR_TIMEOUT at the deadline. The shard keeps one
 * unsubscribed connection for the next wait; waits at once in other threads open more. */
int simai_redis_notified(simai_store *s, int i, const char *channel, size_t n,
                         int (*check)(void *), void *arg, double deadline);

/* Chunks: a large value is a 36-byte pointer (<4sQQ16s: "SMCH", total, chunk size, version)
 * to simai:KIND:NAME\0VERSION:I. */
int simai_redis_is_pointer(const struct simai_reply *r);
/* Gather the chunks `ptr` points to into *buf (malloc'd); SIMAI_WAIT_AGAIN if one is gone (a
 * writer replaced the value meanwhile). Shard i's lock is held. */
int simai_redis_gather(simai_store *s, int i, char kind, const char *name, size_t n,
                       const char *ptr, uint8_t **buf, size_t *len);
/* Delete the chunks of a value version that was just replaced or deleted (nothing unless
 * `old` is a pointer). */
int simai_redis_drop_chunks(simai_store *s, int i, char kind, const char *name, size_t n,
                            const struct simai_reply *old);

/* SIMAI_ERR_PERMISSION for SIMAI_REDIS_DENIED, saying who may not `op` the key or stream
 * `name`, as redis.py's _denied says it; other codes pass through. */
int simai_redis_denied(simai_store *s, int rc, const char *op, const char *name);

/* Streams and consumer groups (backend_redis_stream.c), for the backend's table. */
int simai_redis_append(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                       const struct simai_src *src, double deadline, int64_t *index);
int simai_redis_stream_get(simai_store *s, const char *stream, size_t n, int64_t index,
                           double deadline, const struct simai_want *w, simai_view **view,
                           const void **data);
int simai_redis_stream_info(simai_store *s, const char *stream, size_t n,
                            simai_stream_state *st);
int simai_redis_stream_close(simai_store *s, const char *stream, size_t n);
int simai_redis_stream_create(simai_store *s, const char *stream, size_t n,
                              const simai_stream_state *want, simai_stream_state *have);
int simai_redis_stream_delete(simai_store *s, const char *stream, size_t n, int *existed);
int simai_redis_position(simai_store *s, const char *stream, size_t n, const char *group,
                         size_t gn, int64_t *index, int *found);
int simai_redis_set_position(simai_store *s, const char *stream, size_t n, const char *group,
                             size_t gn, int64_t index);

#endif

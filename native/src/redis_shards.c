/* The shards of a redis:// store: its URL, connections, commands, waits and chunks. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend_redis.h"
#include "error.h"
#include "internal.h"
#include "tls.h"

#define DEFAULT_PORT 6379
#define MAX_SHARDS 256
#define CONNECT_TIMEOUT 5.0
#define TIMEOUT 30.0
#define RECHECK 1.0 /* a waiter re-checks at least this often */
#define PTR_BYTES 36

/* zlib's crc32, as redis.py's shard_of computes it. */
static uint32_t crc32(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *b++;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

int simai_redis_shard(simai_store *s, const char *name, size_t n)
{
    return (int)(crc32(name, n) % (uint32_t)R(s)->n);
}

/* "simai:" KIND ":" NAME into out; its length. */
size_t simai_redis_key(char *out, char kind, const char *name, size_t n)
{
    memcpy(out, SIMAI_REDIS_NS, sizeof SIMAI_REDIS_NS - 1);
    out[sizeof SIMAI_REDIS_NS - 1] = kind;
    out[sizeof SIMAI_REDIS_NS] = ':';
    memcpy(out + sizeof SIMAI_REDIS_NS + 1, name, n);
    return sizeof SIMAI_REDIS_NS + 1 + n;
}

int64_t simai_redis_int(const struct simai_reply *r)
{
    return r->type == SIMAI_INT ? r->integer : r->str ? strtoll(r->str, NULL, 10) : 0;
}

/* --- connections --------------------------------------------------------------------------- */

static void where(simai_store *s, int i, char *out, size_t cap)
{
    if (R(s)->n == 1)
        snprintf(out, cap, "redis store %s", s->url);
    else
        snprintf(out, cap, "redis store %s (shard %s:%d)", s->url, R(s)->sh[i].host,
                 R(s)->sh[i].port);
}

/* Open a connection to shard i (messages name the store, and hint at a missing password). */
int simai_redis_connect(simai_store *s, int i, struct simai_conn *c)
{
    struct rstore *r = R(s);
    char at[600];
    int rc = simai_conn_open(c, r->sh[i].host, r->sh[i].port, r->user, r->password, r->tls,
                             CONNECT_TIMEOUT, TIMEOUT);
    char msg[1024];
    if (rc) {
        where(s, i, at, sizeof at);
        simai_error_context("%s: ", at);
    }
    snprintf(msg, sizeof msg, "%s", rc ? simai_last_error() : "");
    if (rc == SIMAI_ERR_PERMISSION && !r->password && strstr(msg, "authentication"))
        simai_fail(rc, "%s (no password given: set SIMAI_STORE_PASSWORD)", msg);
    else if (rc == SIMAI_ERR_IO && !r->tls && strstr(msg, "lost connection"))
        simai_fail(rc, "%s (a store that speaks only TLS does this: is its URL rediss://?)", msg);
    return rc;
}

/* Whether an error reply is Redis refusing a command by its access rules (redis.py's
 * _is_denied). */
static int refused(const struct simai_reply *r)
{
    return r->type == SIMAI_ERROR && r->str &&
           (!strncmp(r->str, "NOPERM", 6) || strstr(r->str, "no permissions"));
}

int simai_redis_denied(simai_store *s, int rc, const char *op, const char *name)
{
    const char *component = getenv("SIMAI_COMPONENT"), *access = getenv("SIMAI_STORE_ACCESS");
    const char *user = R(s)->user ? R(s)->user : "default";
    char who[600];
    if (rc != SIMAI_REDIS_DENIED)
        return rc;
    if (component && *component)
        snprintf(who, sizeof who, "component '%.200s' (store user '%.200s')", component, user);
    else
        snprintf(who, sizeof who, "store user '%.200s'", user);
    if (access && *access)
        return simai_fail(SIMAI_ERR_PERMISSION, "%s may not %s '%s' in %s: its store_access is %s",
                          who, op, name, s->url, access);
    return simai_fail(SIMAI_ERR_PERMISSION, "%s may not %s '%s' in %s", who, op, name, s->url);
}

/* Send `count` commands to shard i (its lock held) in one round trip and read their replies
 * (all nil, safe to free, after a failure). A failure that leaves replies unread closes the
 * connection; the next call reconnects. An error reply becomes SIMAI_ERR_IO saying what
 * Redis said. */
int simai_redis_run(simai_store *s, int i, int count, const struct cmd *cmds,
                    struct simai_reply *out)
{
    struct simai_conn *c = &R(s)->sh[i].conn;
    char at[600];
    int rc, got = 0;
    memset(out, 0, (size_t)count * sizeof *out); /* nil replies: freeing them is safe */
    rc = c->fd < 0 ? simai_redis_connect(s, i, c) : SIMAI_OK;
    for (int k = 0; k < count && !rc; k++)
        rc = simai_conn_send(c, cmds[k].argc, cmds[k].argv);
    if (!rc)
        rc = simai_conn_flush(c);
    for (; got < count && !rc; got++)
        rc = simai_conn_read(c, &out[got]);
    for (int k = 0; k < got && !rc; k++)
        if (out[k].type == SIMAI_ERROR) {
            where(s, i, at, sizeof at);
            rc = simai_fail(SIMAI_ERR_IO, "%s: %s", at, out[k].str);
            if (refused(&out[k]))
                rc = SIMAI_REDIS_DENIED; /* the caller names the key and the operation */
        }
    if (rc) {
        for (int k = 0; k < got; k++)
            simai_reply_free(&out[k]);
        if (got < count) /* replies left unread: out of step */
            simai_conn_close(c);
    }
    return rc;
}

void simai_redis_lock(simai_store *s, int i)
{
    pthread_mutex_lock(&R(s)->sh[i].lock);
}

void simai_redis_unlock(simai_store *s, int i)
{
    pthread_mutex_unlock(&R(s)->sh[i].lock);
}

/* check(arg) until it returns something other than SIMAI_WAIT_AGAIN, woken by messages on
 * `channel` of shard i; SIMAI_ERR_TIMEOUT at the deadline. */
/* A subscriber connection: the shard's idle one if it has one, else a new one. */
static int take_subscriber(simai_store *s, int i, struct simai_conn *c)
{
    struct shard *sh = &R(s)->sh[i];
    simai_redis_lock(s, i);
    *c = sh->idle;
    sh->idle.fd = -1;
    sh->idle.ssl = NULL;
    sh->idle.buf = sh->idle.out = NULL;
    simai_redis_unlock(s, i);
    return c->fd >= 0 ? SIMAI_OK : simai_redis_connect(s, i, c);
}

/* Unsubscribe and keep the connection for the next wait (one idle per shard), else close it. */
static void give_back(simai_store *s, int i, struct simai_conn *c, const char *channel, size_t n)
{
    struct cmd unsub = {2, {STR("UNSUBSCRIBE"), ARG(channel, n)}};
    struct shard *sh = &R(s)->sh[i];
    struct simai_reply r;
    int done = 0;
    if (c->fd >= 0 && !simai_conn_send(c, unsub.argc, unsub.argv) && !simai_conn_flush(c))
        while (!done && !simai_conn_read(c, &r)) { /* messages may come before the reply */
            done = r.type == SIMAI_ARRAY && r.len && r.elem[0].str &&
                   !strcmp(r.elem[0].str, "unsubscribe");
            simai_reply_free(&r);
        }
    simai_redis_lock(s, i);
    if (done && sh->idle.fd < 0) {
        simai_conn_close(&sh->idle);
        sh->idle = *c;
        c->fd = -1;
        c->ssl = NULL;
        c->buf = c->out = NULL;
    }
    simai_redis_unlock(s, i);
    simai_conn_close(c);
}

int simai_redis_notified(simai_store *s, int i, const char *channel, size_t n,
                         int (*check)(void *), void *arg, double deadline)
{
    struct cmd sub = {2, {STR("SUBSCRIBE"), ARG(channel, n)}};
    struct simai_conn c;
    struct simai_reply r;
    int rc = check(arg);
    if (rc != SIMAI_WAIT_AGAIN)
        return rc;
    if ((rc = take_subscriber(s, i, &c)))
        return rc;
    if (!(rc = simai_conn_send(&c, sub.argc, sub.argv)) && !(rc = simai_conn_flush(&c)) &&
        !(rc = simai_conn_read(&c, &r))) {
        if (r.type == SIMAI_ERROR) { /* a channel the user may not listen on, say */
            char at[600];
            where(s, i, at, sizeof at);
            rc = simai_fail(SIMAI_ERR_IO, "%s: %s", at, r.str);
            if (refused(&r))
                rc = SIMAI_REDIS_DENIED;
        }
        simai_reply_free(&r);
    }
    while (!rc && (rc = check(arg)) == SIMAI_WAIT_AGAIN) {
        double until = simai_now() + RECHECK;
        rc = SIMAI_OK;
        if (deadline >= 0 && simai_now() >= deadline) {
            rc = SIMAI_ERR_TIMEOUT;
            break;
        }
        if (deadline >= 0 && deadline < until)
            until = deadline;
        if (simai_conn_ready(&c, until) && !(rc = simai_conn_read(&c, &r)))
            simai_reply_free(&r);
    }
    give_back(s, i, &c, channel, n);
    return rc;
}

/* --- chunks -------------------------------------------------------------------------------- */

int simai_redis_is_pointer(const struct simai_reply *r)
{
    return r->type == SIMAI_BULK && r->len == PTR_BYTES && !memcmp(r->str, "SMCH", 4);
}

static uint64_t le64(const char *p)
{
    uint64_t x = 0;
    for (int k = 7; k >= 0; k--)
        x = (x << 8) | (uint8_t)p[k];
    return x;
}

/* Key of chunk j of the value `ptr` points to: simai:KIND:NAME\0VER:j */
static size_t chunk_key(char *out, char kind, const char *name, size_t n, const char *ptr,
                        uint64_t j)
{
    size_t len = simai_redis_key(out, kind, name, n);
    out[len++] = 0;
    memcpy(out + len, ptr + 20, 16);
    len += 16;
    return len + (size_t)sprintf(out + len, ":%" PRIu64, j);
}

/* Gather the chunks `ptr` points to into *buf (malloc'd); SIMAI_WAIT_AGAIN if one is gone (a
 * writer replaced the value meanwhile). Shard i's lock is held. */
int simai_redis_gather(simai_store *s, int i, char kind, const char *name, size_t n,
                       const char *ptr, uint8_t **buf, size_t *len)
{
    uint64_t total = le64(ptr + 4), size = le64(ptr + 12), count, j;
    char key[RKEY_CAP + 48];
    int rc = SIMAI_OK;
    if (!size || !(*buf = malloc(total + 1)))
        return simai_fail(size ? SIMAI_ERR_NOMEM : SIMAI_ERR_CORRUPT,
                          "cannot read a chunked value of %" PRIu64 " bytes", total);
    count = (total + size - 1) / size;
    for (j = 0; j < count && !rc; j++) {
        struct cmd get = {2, {STR("GET"), ARG(key, chunk_key(key, kind, name, n, ptr, j))}};
        struct simai_reply r;
        uint64_t want = j + 1 < count ? size : total - j * size;
        if ((rc = simai_redis_run(s, i, 1, &get, &r)))
            break;
        if (r.type != SIMAI_BULK)
            rc = SIMAI_WAIT_AGAIN;
        else if (r.len != want)
            rc = simai_fail(SIMAI_ERR_CORRUPT, "chunk %" PRIu64 " holds %zu bytes, not %" PRIu64,
                            j, r.len, want);
        else
            memcpy(*buf + j * size, r.str, r.len);
        simai_reply_free(&r);
    }
    if (rc)
        free(*buf);
    *len = total;
    return rc;
}

/* Delete the chunks of a value version that was just replaced or deleted. */
int simai_redis_drop_chunks(simai_store *s, int i, char kind, const char *name, size_t n,
                            const struct simai_reply *old)
{
    uint64_t count;
    int rc = SIMAI_OK;
    if (!simai_redis_is_pointer(old))
        return SIMAI_OK;
    count = (le64(old->str + 4) + le64(old->str + 12) - 1) / le64(old->str + 12);
    for (uint64_t j = 0; j < count && !rc; j++) {
        char key[RKEY_CAP + 48];
        struct cmd del = {2, {STR("DEL"), ARG(key, chunk_key(key, kind, name, n, old->str, j))}};
        struct simai_reply r;
        if (!(rc = simai_redis_run(s, i, 1, &del, &r)))
            simai_reply_free(&r);
    }
    return rc;
}

/* --- the URL -------------------------------------------------------------------------------- */

static int bad_url(const char *url, const char *why)
{
    return simai_fail(SIMAI_ERR_INVALID, "redis store URL '%s' %s; the form is "
                      "redis://host:port[,host:port,...]", url, why);
}

/* One host:port (or [v6]:port) of the URL into shard `sh`. */
static int parse_address(const char *part, size_t len, struct shard *sh, const char *url)
{
    const char *host = part, *port = NULL, *end = part + len;
    size_t hn;
    if (*part == '[') {
        const char *close = memchr(part, ']', len);
        if (!close)
            return bad_url(url, "has a bad IPv6 address");
        host = part + 1;
        hn = (size_t)(close - host);
        if (close + 1 < end && close[1] == ':')
            port = close + 2;
    } else {
        const char *colon = memchr(part, ':', len);
        hn = colon ? (size_t)(colon - part) : len;
        if (colon)
            port = colon + 1;
    }
    if (!hn || hn >= sizeof sh->host)
        return bad_url(url, "has an empty or too long host");
    memcpy(sh->host, host, hn);
    sh->host[hn] = 0;
    sh->port = DEFAULT_PORT;
    if (port) {
        char digits[8] = "";
        char *stop;
        long p;
        if ((size_t)(end - port) >= sizeof digits)
            return bad_url(url, "has a bad port");
        memcpy(digits, port, (size_t)(end - port));
        digits[end - port] = 0;
        p = strtol(digits, &stop, 10);
        if (!*digits || *stop || p <= 0 || p >= 65536)
            return bad_url(url, "has a bad port");
        sh->port = (int)p;
    }
    return SIMAI_OK;
}

int simai_redis_parse(simai_store *s)
{
    char *netloc = strstr(s->url, "://") + 3, *at, *slash = strchr(netloc, '/');
    const char *env = getenv("SIMAI_STORE_PASSWORD"), *env_user = getenv("SIMAI_STORE_USER");
    char *user = NULL, *password = NULL;
    struct rstore *r;
    size_t count = 1, len;
    int rc = SIMAI_OK;
    if (slash && slash[strspn(slash, "/")])
        return bad_url(s->url, "has a path");
    len = slash ? (size_t)(slash - netloc) : strlen(netloc);
    if (memchr(netloc, '?', len) || memchr(netloc, '#', len))
        return bad_url(s->url, "has a query");
    if ((at = memrchr(netloc, '@', len))) { /* user[:password]@: the password is cut out */
        char *colon = memchr(netloc, ':', (size_t)(at - netloc));
        size_t un = (size_t)((colon ? colon : at) - netloc);
        if (un && !(user = strndup(netloc, un)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory");
        if (colon && !(password = strndup(colon + 1, (size_t)(at - colon - 1)))) {
            free(user);
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory");
        }
        /* simai_url without the password: redis://user@hosts or redis://hosts */
        size_t keep = un ? un + 1 : 0, hosts = len - (size_t)(at + 1 - netloc);
        memmove(netloc + keep, at + 1, strlen(at + 1) + 1);
        if (un)
            netloc[un] = '@';
        netloc += keep;
        len = hosts;
    }
    if (!user && env_user && *env_user) { /* the user the workflow gave this component */
        size_t un = strlen(env_user);
        if (un >= SIMAI_URL_SPARE)
            return simai_fail(SIMAI_ERR_INVALID, "SIMAI_STORE_USER is longer than %d bytes",
                              SIMAI_URL_SPARE - 1);
        if (!(user = strdup(env_user)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory");
        /* simai_url names it, as Python's url does (store.c left room) */
        memmove(netloc + un + 1, netloc, strlen(netloc) + 1);
        memcpy(netloc, user, un);
        netloc[un] = '@';
        netloc += un + 1;
    }
    for (size_t k = 0; k < len; k++)
        count += netloc[k] == ',';
    if (count > MAX_SHARDS || !(r = calloc(1, sizeof *r + count * sizeof r->sh[0]))) {
        free(user);
        free(password);
        return count > MAX_SHARDS ? bad_url(s->url, "has too many shards")
                                  : simai_fail(SIMAI_ERR_NOMEM, "out of memory");
    }
    r->user = user;
    if (env && *env) {
        free(password);
        if (!(password = strdup(env)))
            rc = simai_fail(SIMAI_ERR_NOMEM, "out of memory");
    }
    r->password = password;
    for (const char *part = netloc; r->n < (int)count && !rc; r->n++) {
        const char *comma = memchr(part, ',', (size_t)(netloc + len - part));
        const char *end = comma ? comma : netloc + len;
        struct shard *sh = &r->sh[r->n];
        while (part < end && *part == ' ')
            part++;
        rc = parse_address(part, (size_t)(end - part), sh, s->url);
        sh->conn.fd = sh->idle.fd = -1;
        pthread_mutex_init(&sh->lock, NULL);
        part = end + 1;
    }
    s->impl = r;
    if (!rc && !strncasecmp(s->url, "rediss://", 9))
        rc = simai_tls_new(&r->tls);
    if (rc)
        simai_redis_free(s);
    return rc;
}

void simai_redis_free(simai_store *s)
{
    struct rstore *r = R(s);
    for (int i = 0; i < r->n; i++) {
        simai_conn_close(&r->sh[i].conn);
        simai_conn_close(&r->sh[i].idle);
        pthread_mutex_destroy(&r->sh[i].lock);
    }
    simai_tls_free(r->tls);
    free(r->user);
    free(r->password);
    free(r);
}

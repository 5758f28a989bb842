/* RESP2 over one TCP socket, or a TLS session on it (see resp.h). */
#define _GNU_SOURCE
#include "resp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "env.h"
#include "error.h"
#include "tls.h"

#define BIG (32 * 1024) /* arguments this large go to the socket without a copy */
#define RECV (256 * 1024)

static int lost(struct simai_conn *c, const char *why)
{
    int timed_out = errno == EAGAIN || errno == EWOULDBLOCK, alert = 0, code;
    if (c->ssl && errno == EPROTO)
        why = simai_tls_why(&alert);
    /* TLS 1.3: the server checks our certificate after the handshake, and a refusal ends the
     * session at the first reply (with an alert, or a reset that may overtake it) */
    if (c->ssl && c->opening && !timed_out && (alert || errno != EPROTO))
        code = simai_fail(SIMAI_ERR_PERMISSION,
                          "%s ended the TLS session: it refused this client's certificate (not "
                          "signed by the CA it trusts?): %s",
                          c->name, why);
    else
        code = simai_fail(SIMAI_ERR_IO, timed_out ? "%s did not answer in time; connection closed"
                                                  : "lost connection to %s: %s",
                          c->name, why);
    simai_conn_close(c);
    return code;
}

/* send(2) or recv(2), on the TLS session when there is one. */
static ssize_t put_bytes(struct simai_conn *c, const void *p, size_t n)
{
    return c->ssl ? simai_tls_send(c->ssl, p, n) : send(c->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t get_bytes(struct simai_conn *c, void *p, size_t n)
{
    return c->ssl ? simai_tls_recv(c->ssl, p, n) : recv(c->fd, p, n, 0);
}

static int poll_ms(int fd, short events, double deadline)
{
    struct pollfd p = {fd, events, 0};
    int ms = deadline < 0 ? -1 : (int)((deadline - simai_now()) * 1000) + 1;
    int rc;
    if (ms < -1)
        ms = 0;
    while ((rc = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    return rc;
}

static int connect_to(struct simai_conn *c, const char *host, int port, double timeout)
{
    struct addrinfo hints = {0}, *found, *ai;
    char service[16];
    int rc, err = 0;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%d", port);
    if ((rc = getaddrinfo(host, service, &hints, &found)))
        return simai_fail(SIMAI_ERR_IO, "cannot connect to %s: %s", c->name, gai_strerror(rc));
    for (ai = found; ai && c->fd < 0; ai = ai->ai_next) {
        socklen_t len = sizeof err;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS)
            err = errno;
        else if (poll_ms(fd, POLLOUT, simai_now() + timeout) <= 0)
            err = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
            /* err says why */
        } else {
            c->fd = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(found);
    if (c->fd < 0)
        return simai_fail(SIMAI_ERR_IO, "cannot connect to %s: %s", c->name, strerror(err));
    return SIMAI_OK;
}

static void set_timeout(int fd, double seconds)
{
    struct timeval tv = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e6)};
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int simai_conn_open(struct simai_conn *c, const char *host, int port, const char *user,
                    const char *password, const struct simai_tls *tls, double connect_timeout,
                    double timeout)
{
    const char *scheme = tls ? "rediss" : "redis";
    struct simai_reply r;
    int rc;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    snprintf(c->name, sizeof c->name, strchr(host, ':') ? "%s://[%s]:%d" : "%s://%s:%d", scheme,
             host, port);
    if ((rc = connect_to(c, host, port, connect_timeout)))
        return rc;
    set_timeout(c->fd, connect_timeout);
    if (tls && (rc = simai_tls_start(tls, c->fd, host, c->name, &c->ssl))) {
        simai_conn_close(c);
        return rc;
    }
    c->opening = 1;
    if (password) {
        struct simai_arg auth[3] = {{"AUTH", 4, NULL, 0}, {user, user ? strlen(user) : 0, NULL, 0},
                                    {password, strlen(password), NULL, 0}};
        if (user)
            rc = simai_conn_send(c, 3, auth);
        else {
            auth[1] = auth[2];
            rc = simai_conn_send(c, 2, auth);
        }
    } else {
        struct simai_arg ping = {"PING", 4, NULL, 0};
        rc = simai_conn_send(c, 1, &ping);
    }
    if (rc || (rc = simai_conn_flush(c)) || (rc = simai_conn_read(c, &r))) {
        simai_conn_close(c);
        return rc;
    }
    c->opening = 0;
    if (r.type == SIMAI_ERROR) {
        rc = simai_fail(SIMAI_ERR_IO, "%s refused the connection: %s", c->name, r.str);
        simai_conn_close(c);
    } else
        set_timeout(c->fd, timeout);
    simai_reply_free(&r);
    return rc;
}

void simai_conn_close(struct simai_conn *c)
{
    simai_tls_end(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    free(c->out);
    c->buf = c->out = NULL;
    c->pos = c->len = c->cap = c->outlen = c->outcap = 0;
}

/* --- writing ------------------------------------------------------------------------------- */

static int send_all(struct simai_conn *c, const void *p, size_t n)
{
    while (n) {
        ssize_t w = put_bytes(c, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return lost(c, strerror(errno));
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return SIMAI_OK;
}

static int queue(struct simai_conn *c, const void *p, size_t n)
{
    if (!n)
        return SIMAI_OK;
    if (c->outlen + n > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        char *grown;
        while (cap < c->outlen + n)
            cap *= 2;
        if (!(grown = realloc(c->out, cap)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory sending to %s", c->name);
        c->out = grown;
        c->outcap = cap;
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
    return SIMAI_OK;
}

int simai_conn_flush(struct simai_conn *c)
{
    int rc;
    if (c->fd < 0)
        return simai_fail(SIMAI_ERR_IO, "connection to %s is closed", c->name);
    rc = c->outlen ? send_all(c, c->out, c->outlen) : SIMAI_OK;
    c->outlen = 0;
    return rc;
}

int simai_conn_send(struct simai_conn *c, int argc, const struct simai_arg *argv)
{
    char line[32];
    int rc = SIMAI_OK;
    if (c->fd < 0)
        return simai_fail(SIMAI_ERR_IO, "connection to %s is closed", c->name);
    rc = queue(c, line, (size_t)snprintf(line, sizeof line, "*%d\r\n", argc));
    for (int i = 0; i < argc && !rc; i++) {
        const struct simai_arg *a = &argv[i];
        size_t total = a->n + a->nb;
        rc = queue(c, line, (size_t)snprintf(line, sizeof line, "$%zu\r\n", total));
        if (rc)
            break;
        if (total < BIG)
            rc = queue(c, a->a, a->n) || queue(c, a->b, a->nb) ? SIMAI_ERR_NOMEM : SIMAI_OK;
        else if (!(rc = simai_conn_flush(c)) && !(rc = send_all(c, a->a, a->n)) && a->nb)
            rc = send_all(c, a->b, a->nb);
        if (!rc)
            rc = queue(c, "\r\n", 2);
    }
    return rc;
}

/* --- reading ------------------------------------------------------------------------------- */

static int fill(struct simai_conn *c)
{
    ssize_t r;
    if (c->pos) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->cap - c->len < RECV / 2) {
        char *grown = realloc(c->buf, c->cap + RECV);
        if (!grown)
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory reading from %s", c->name);
        c->buf = grown;
        c->cap += RECV;
    }
    while ((r = get_bytes(c, c->buf + c->len, c->cap - c->len)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return errno = 0, lost(c, "the server closed it");
    if (r < 0)
        return lost(c, strerror(errno));
    c->len += (size_t)r;
    return SIMAI_OK;
}

/* The next line, without its CRLF, NUL-terminated in place. */
static int readline(struct simai_conn *c, char **line)
{
    for (;;) {
        char *end = c->len > c->pos ? memmem(c->buf + c->pos, c->len - c->pos, "\r\n", 2) : NULL;
        int rc;
        if (end) {
            *end = 0;
            *line = c->buf + c->pos;
            c->pos = (size_t)(end - c->buf) + 2;
            return SIMAI_OK;
        }
        if ((rc = fill(c)))
            return rc;
    }
}

static int read_bulk(struct simai_conn *c, size_t n, struct simai_reply *r)
{
    size_t have = c->len - c->pos, k = have < n ? have : n;
    char *line;
    if (!(r->str = malloc(n + 1)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory reading %zu bytes from %s", n,
                          c->name);
    r->len = n;
    memcpy(r->str, c->buf + c->pos, k);
    c->pos += k;
    while (k < n) {
        ssize_t got = get_bytes(c, r->str + k, n - k);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return got ? lost(c, strerror(errno)) : (errno = 0, lost(c, "the server closed it"));
        k += (size_t)got;
    }
    r->str[n] = 0;
    return readline(c, &line);
}

static int parse(struct simai_conn *c, struct simai_reply *r)
{
    char *line;
    long long n;
    int rc;
    memset(r, 0, sizeof *r);
    if ((rc = readline(c, &line)))
        return rc;
    n = strtoll(line + 1, NULL, 10);
    switch (line[0]) {
    case '+':
    case '-':
        if (line[0] == '-' && (!strncmp(line + 1, "NOAUTH", 6) ||
                               !strncmp(line + 1, "WRONGPASS", 9) ||
                               strstr(line, "without any password"))) {
            rc = simai_fail(SIMAI_ERR_PERMISSION, "authentication to %s failed: %s", c->name,
                            line + 1);
            simai_conn_close(c);
            return rc;
        }
        r->type = line[0];
        r->len = strlen(line + 1);
        if (!(r->str = strdup(line + 1)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory");
        return SIMAI_OK;
    case ':':
        r->type = SIMAI_INT;
        r->integer = n;
        return SIMAI_OK;
    case '$':
        if (n < 0)
            return SIMAI_OK;
        r->type = SIMAI_BULK;
        return read_bulk(c, (size_t)n, r);
    case '*':
        if (n < 0)
            return SIMAI_OK;
        r->type = SIMAI_ARRAY;
        if (n && !(r->elem = calloc((size_t)n, sizeof *r->elem)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory");
        while (r->len < (size_t)n) /* counted first, so a failed element is freed too */
            if ((rc = parse(c, &r->elem[r->len++])))
                return rc;
        return SIMAI_OK;
    }
    rc = simai_fail(SIMAI_ERR_IO, "%s sent a reply this client cannot parse: '%.40s'", c->name,
                    line);
    simai_conn_close(c);
    return rc;
}

int simai_conn_read(struct simai_conn *c, struct simai_reply *r)
{
    int rc;
    memset(r, 0, sizeof *r);
    if (c->fd < 0)
        return simai_fail(SIMAI_ERR_IO, "connection to %s is closed", c->name);
    if ((rc = parse(c, r)))
        simai_reply_free(r);
    return rc;
}

int simai_conn_ready(struct simai_conn *c, double deadline)
{
    if (c->pos < c->len || (c->ssl && simai_tls_pending(c->ssl)))
        return 1;
    return poll_ms(c->fd, POLLIN, deadline) > 0;
}

void simai_reply_free(struct simai_reply *r)
{
    for (size_t i = 0; r->type == SIMAI_ARRAY && i < r->len; i++)
        simai_reply_free(&r->elem[i]);
    free(r->elem);
    free(r->str);
    memset(r, 0, sizeof *r);
}

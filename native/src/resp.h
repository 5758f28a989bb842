/* A minimal RESP2 client (simai/store/resp.py): one socket to one redis-server, in TLS when
 * asked (tls.h), authenticated on connect; commands sent with large arguments handed to the
 * socket as they are (no copy), replies parsed into a tree whose bulk strings are malloc'd
 * (a caller may take them). */
#ifndef SIMAI_RESP_H
#define SIMAI_RESP_H

#include <stddef.h>
#include <stdint.h>

struct simai_conn {
    int fd;           /* -1 when closed */
    void *ssl;        /* the TLS session on fd (rediss://), else NULL */
    int opening;      /* 1 until AUTH is answered: a TLS refusal then means our certificate */
    char name[300];   /* redis://host:port or rediss://host:port, for messages */
    char *buf;        /* received, not yet parsed: buf[pos..len) */
    size_t pos, len, cap;
    char *out;        /* small arguments, gathered before they are sent */
    size_t outlen, outcap;
};

/* One command argument: a[0..n), followed by b[0..nb) (a header and its payload travel as one
 * bulk string). */
struct simai_arg {
    const void *a;
    size_t n;
    const void *b;
    size_t nb;
};

enum { SIMAI_NIL = 0, SIMAI_STATUS = '+', SIMAI_ERROR = '-', SIMAI_INT = ':', SIMAI_BULK = '$',
       SIMAI_ARRAY = '*' };

struct simai_reply {
    int type;
    int64_t integer;           /* SIMAI_INT */
    char *str;                 /* SIMAI_STATUS, SIMAI_ERROR, SIMAI_BULK: NUL-terminated */
    size_t len;
    struct simai_reply *elem;  /* SIMAI_ARRAY: len elements */
};

struct simai_tls;

/* Connect (within `connect_timeout` seconds), start TLS when `tls` is given (the server's
 * certificate must name `host`), and AUTH (or PING without a password); every later read or
 * write may take `timeout` seconds. SIMAI_ERR_PERMISSION when the server refuses the
 * credentials or wants some, or when either side refuses the other's certificate,
 * SIMAI_ERR_IO when it cannot be reached. */
int simai_conn_open(struct simai_conn *c, const char *host, int port, const char *user,
                    const char *password, const struct simai_tls *tls, double connect_timeout,
                    double timeout);
void simai_conn_close(struct simai_conn *c);

/* Queue one command (sent by simai_conn_flush, or at once when it has a large argument). */
int simai_conn_send(struct simai_conn *c, int argc, const struct simai_arg *argv);
int simai_conn_flush(struct simai_conn *c);
/* Read one reply. An error reply is a reply (SIMAI_ERROR), except NOAUTH and WRONGPASS, which
 * are SIMAI_ERR_PERMISSION (a refused command, NOPERM, is a reply). A lost connection is SIMAI_ERR_IO and closes it. */
int simai_conn_read(struct simai_conn *c, struct simai_reply *r);
/* Whether a reply can be read before the monotonic `deadline` (< 0: wait forever): 1 or 0. */
int simai_conn_ready(struct simai_conn *c, double deadline);

void simai_reply_free(struct simai_reply *r);

#endif

/* TLS for rediss:// stores through OpenSSL (see tls.h). */
#define _GNU_SOURCE
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#ifdef SIMAI_HAVE_OPENSSL

#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct simai_tls {
    SSL_CTX *ctx;
};

static _Thread_local struct {
    char why[256];
    int alert;
} last;

/* Record the oldest error of OpenSSL's queue for this thread (its root cause), and clear it. */
static void record(void)
{
    unsigned long e = ERR_peek_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    last.alert = e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET;
    if (reason)
        snprintf(last.why, sizeof last.why, "%s", reason);
    else if (e)
        ERR_error_string_n(e, last.why, sizeof last.why);
    else
        snprintf(last.why, sizeof last.why, "TLS error");
    ERR_clear_error();
}

const char *simai_tls_why(int *alert)
{
    if (alert)
        *alert = last.alert;
    return last.why;
}

/* --- the socket under a session: send() without SIGPIPE -------------------------------------- */

/* OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE on a closed connection;
 * this one sends with MSG_NOSIGNAL, as the plain connections do. */
static int bio_write(BIO *b, const char *p, int n)
{
    ssize_t w;
    while ((w = send((int)(intptr_t)BIO_get_data(b), p, (size_t)n, MSG_NOSIGNAL)) < 0 &&
           errno == EINTR)
        ;
    BIO_clear_retry_flags(b);
    return (int)w;
}

static int bio_read(BIO *b, char *p, int n)
{
    ssize_t r;
    while ((r = recv((int)(intptr_t)BIO_get_data(b), p, (size_t)n, 0)) < 0 && errno == EINTR)
        ;
    BIO_clear_retry_flags(b);
    return (int)r;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *socket_method;
static pthread_once_t socket_method_once = PTHREAD_ONCE_INIT;

/* Made once and kept for the life of the process. */
static void make_socket_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "simai socket");
    if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
        BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
        socket_method = m;
    else
        BIO_meth_free(m);
}

/* --- the context ------------------------------------------------------------------------------ */

/* An encrypted key would make OpenSSL ask for its passphrase on the terminal: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf, (void)size, (void)rwflag, (void)arg;
    return 0;
}

static int unusable(const char *var, const char *path, const char *what)
{
    record();
    return simai_fail(SIMAI_ERR_INVALID, "cannot use the TLS file %s=%s: %s (%s)", var, path,
                      what, last.why);
}

int simai_tls_new(struct simai_tls **out)
{
    static const char *const names[3] = {SIMAI_ENV_TLS_CA, SIMAI_ENV_TLS_CERT, SIMAI_ENV_TLS_KEY};
    const char *path[3];
    char missing[128] = "";
    struct simai_tls *t;
    SSL_CTX *ctx;
    int rc = SIMAI_OK;
    *out = NULL;
    for (int k = 0; k < 3; k++) {
        path[k] = getenv(names[k]);
        if (!path[k] || !*path[k])
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s",
                     *missing ? ", " : "", names[k]);
    }
    if (*missing)
        return simai_fail(SIMAI_ERR_INVALID,
                          "rediss:// needs the run's TLS files: set %s, %s and %s (`simai store "
                          "start --tls` prints them); %s not set",
                          names[0], names[1], names[2], missing);
    for (int k = 0; k < 3; k++) { /* say which file, and why, before OpenSSL's terse reasons */
        FILE *f = fopen(path[k], "r");
        if (!f)
            return simai_fail(SIMAI_ERR_INVALID, "cannot read the TLS file %s=%s: %s", names[k],
                              path[k], strerror(errno));
        fclose(f);
    }
    ERR_clear_error();
    if (!(ctx = SSL_CTX_new(TLS_client_method())) || !(t = malloc(sizeof *t))) {
        SSL_CTX_free(ctx);
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory making a TLS context");
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* a server that hangs up without close_notify has closed the connection; RESP's framing
     * tells a cut reply */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    if (SSL_CTX_load_verify_locations(ctx, path[0], NULL) != 1)
        rc = unusable(names[0], path[0], "no CA certificate in it");
    else if (SSL_CTX_use_certificate_chain_file(ctx, path[1]) != 1)
        rc = unusable(names[1], path[1], "no certificate in it");
    else if (SSL_CTX_use_PrivateKey_file(ctx, path[2], SSL_FILETYPE_PEM) != 1)
        rc = unusable(names[2], path[2], "no unencrypted private key in it");
    else if (SSL_CTX_check_private_key(ctx) != 1)
        rc = unusable(names[2], path[2], "not the key of the certificate in " SIMAI_ENV_TLS_CERT);
    if (rc) {
        SSL_CTX_free(ctx);
        free(t);
        return rc;
    }
    t->ctx = ctx;
    *out = t;
    return SIMAI_OK;
}

void simai_tls_free(struct simai_tls *t)
{
    if (t) {
        SSL_CTX_free(t->ctx);
        free(t);
    }
}

/* --- sessions --------------------------------------------------------------------------------- */

int simai_tls_start(const struct simai_tls *t, int fd, const char *host, const char *name,
                    void **out)
{
    unsigned char addr[16];
    X509_VERIFY_PARAM *param;
    SSL *ssl;
    BIO *bio;
    long verified;
    int r, e, saved;
    *out = NULL;
    pthread_once(&socket_method_once, make_socket_method);
    ERR_clear_error();
    if (!socket_method || !(ssl = SSL_new(t->ctx)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory starting TLS with %s", name);
    if (!(bio = BIO_new(socket_method))) {
        SSL_free(ssl);
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory starting TLS with %s", name);
    }
    BIO_set_data(bio, (void *)(intptr_t)fd);
    SSL_set_bio(ssl, bio, bio); /* the session owns it now */
    /* the server's certificate must name the address dialled: an IP address, or a DNS name */
    param = SSL_get0_param(ssl);
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        r = X509_VERIFY_PARAM_set1_ip_asc(param, host);
    else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        r = X509_VERIFY_PARAM_set1_host(param, host, 0) && SSL_set_tlsext_host_name(ssl, host);
    }
    if (r != 1) {
        SSL_free(ssl);
        return simai_fail(SIMAI_ERR_INVALID, "cannot check a TLS certificate for '%s'", host);
    }
    errno = 0;
    if ((r = SSL_connect(ssl)) == 1) {
        *out = ssl;
        return SIMAI_OK;
    }
    saved = errno;
    e = SSL_get_error(ssl, r);
    verified = SSL_get_verify_result(ssl);
    record();
    SSL_free(ssl);
    if (verified != X509_V_OK)
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s did not prove who it is: %s (its certificate is not one the CA in "
                          "$" SIMAI_ENV_TLS_CA " signed for this address)",
                          name, X509_verify_cert_error_string(verified));
    if (e == SSL_ERROR_SSL && (last.alert || strstr(last.why, "certificate")))
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s refused this client's certificate (not signed by the CA it "
                          "trusts?): %s",
                          name, last.why);
    if (e == SSL_ERROR_SYSCALL && (saved == EAGAIN || saved == EWOULDBLOCK))
        return simai_fail(SIMAI_ERR_IO, "TLS with %s failed: it did not answer in time", name);
    return simai_fail(SIMAI_ERR_IO, "TLS with %s failed: %s (does the server speak TLS?)", name,
                      e == SSL_ERROR_SSL ? last.why
                      : saved             ? strerror(saved)
                                          : "the server closed the connection");
}

/* -1 with errno set after a failed SSL_*_ex call; 0 when the server closed the session. */
static ssize_t failed(SSL *ssl, int r)
{
    int saved = errno, e = SSL_get_error(ssl, r);
    SSL_set_quiet_shutdown(ssl, 1); /* no goodbye on a failed session */
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return 0;
    }
    if (e == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        errno = saved ? saved : ECONNRESET;
        return -1;
    }
    record();
    errno = EPROTO;
    return -1;
}

ssize_t simai_tls_send(void *ssl, const void *p, size_t n)
{
    size_t done = 0;
    int r;
    ERR_clear_error();
    errno = 0;
    if ((r = SSL_write_ex(ssl, p, n, &done)) == 1)
        return (ssize_t)done;
    return failed(ssl, r) ? -1 : (errno = EPIPE, -1);
}

ssize_t simai_tls_recv(void *ssl, void *p, size_t n)
{
    size_t done = 0;
    int r;
    ERR_clear_error();
    errno = 0;
    if ((r = SSL_read_ex(ssl, p, n, &done)) == 1)
        return (ssize_t)done;
    return failed(ssl, r);
}

size_t simai_tls_pending(void *ssl)
{
    return (size_t)SSL_pending(ssl);
}

void simai_tls_end(void *ssl)
{
    if (!ssl)
        return;
    if (!SSL_get_quiet_shutdown(ssl))
        SSL_shutdown(ssl); /* sends close_notify; does not wait for the server's */
    ERR_clear_error();
    SSL_free(ssl);
}

#else /* built without OpenSSL: rediss:// is unsupported, and nothing below is reached */

int simai_tls_new(struct simai_tls **out)
{
    *out = NULL;
    return simai_fail(SIMAI_ERR_UNSUPPORTED,
                      "this libsimai was built without OpenSSL, so rediss:// (TLS) is not "
                      "available: rebuild it with OpenSSL's headers installed (Debian: "
                      "apt-get install libssl-dev)");
}

void simai_tls_free(struct simai_tls *t)
{
    (void)t;
}

int simai_tls_start(const struct simai_tls *t, int fd, const char *host, const char *name,
                    void **ssl)
{
    (void)t, (void)fd, (void)host;
    *ssl = NULL;
    return simai_fail(SIMAI_ERR_UNSUPPORTED, "TLS with %s: built without OpenSSL", name);
}

ssize_t simai_tls_send(void *ssl, const void *p, size_t n)
{
    (void)ssl, (void)p, (void)n;
    errno = ENOTSUP;
    return -1;
}

ssize_t simai_tls_recv(void *ssl, void *p, size_t n)
{
    (void)ssl, (void)p, (void)n;
    errno = ENOTSUP;
    return -1;
}

size_t simai_tls_pending(void *ssl)
{
    (void)ssl;
    return 0;
}

const char *simai_tls_why(int *alert)
{
    if (alert)
        *alert = 0;
    return "built without OpenSSL";
}

void simai_tls_end(void *ssl)
{
    (void)ssl;
}

#endif

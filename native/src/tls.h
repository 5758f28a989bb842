/* TLS for rediss:// stores (OpenSSL): both sides prove who they are, as simai/store/tls.py
 * does it. The client checks the server's certificate against the CA in $SIMAI_STORE_TLS_CA
 * and the address it dialled, and presents the certificate and key in $SIMAI_STORE_TLS_CERT
 * and $SIMAI_STORE_TLS_KEY; TLS 1.2 at least. Built without OpenSSL, simai_tls_new is
 * SIMAI_ERR_UNSUPPORTED, saying so. */
#ifndef SIMAI_TLS_H
#define SIMAI_TLS_H

#include <stddef.h>
#include <sys/types.h>

#define SIMAI_ENV_TLS_CA "SIMAI_STORE_TLS_CA"
#define SIMAI_ENV_TLS_CERT "SIMAI_STORE_TLS_CERT"
#define SIMAI_ENV_TLS_KEY "SIMAI_STORE_TLS_KEY"

/* A client context: the CA, this side's certificate and key (shared by the connections of a
 * store, from any thread). */
struct simai_tls;

/* A context from the files $SIMAI_STORE_TLS_* name; SIMAI_ERR_INVALID naming the variable
 * when one is unset or its file cannot be read or used. */
int simai_tls_new(struct simai_tls **tls);
void simai_tls_free(struct simai_tls *tls);

/* The handshake on the connected socket `fd` (blocking, with its timeouts set), checking that
 * the server's certificate names `host`; *ssl is the session for the calls below. `name`
 * (rediss://host:port) is for messages. SIMAI_ERR_PERMISSION when either side refuses the
 * other's certificate, SIMAI_ERR_IO when the server does not speak TLS or cannot be read. */
int simai_tls_start(const struct simai_tls *tls, int fd, const char *host, const char *name,
                    void **ssl);
/* As send(2) and recv(2): bytes moved (0: the server closed the session), or -1 with errno
 * set; errno EPROTO is a TLS error that simai_tls_why() describes. */
ssize_t simai_tls_send(void *ssl, const void *p, size_t n);
ssize_t simai_tls_recv(void *ssl, void *p, size_t n);
/* Bytes the session has decrypted and not yet handed out. */
size_t simai_tls_pending(void *ssl);
/* This thread's last TLS error, and whether it was the server's alert (a refusal). */
const char *simai_tls_why(int *alert);
/* Say goodbye (unless the session failed) and free it; NULL does nothing. */
void simai_tls_end(void *ssl);

#endif

/* One process's handle on a store's files: the LMDB environment, its databases and the
 * notify page, shared by every simai_store of the process that opens the same directory
 * (LMDB must not open one environment twice in a process). Mirrors _Env in local.py. */
#ifndef SIMAI_ENV_H
#define SIMAI_ENV_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "lmdb.h"

struct simai_env {
    MDB_env *env;
    MDB_dbi values, payloads, meta;
    size_t psize;
    size_t txn_bytes; /* pages a transaction touches beyond its data */
    uint32_t *words;  /* the notify page: 32-bit words ... */
    uint64_t *big;    /* ... and, from byte 4096, 64-bit ones */
    int data_fd;
    char root[PATH_MAX];
    dev_t dev;
    ino_t ino;
    pid_t pid;
    int refs;
    struct simai_env *next;
};

/* The environment of the store directory `root` (opened, or shared with another handle of
 * this process); `url` names it in messages. */
int simai_env_acquire(const char *root, const char *url, struct simai_env **env);
void simai_env_release(struct simai_env *env);
/* One more holder (a view) of an environment already acquired. */
void simai_env_retain(struct simai_env *env);

/* Mark the store destroyed for every process (local.py destroy) and wake its waiters. */
void simai_env_mark_destroyed(struct simai_env *e);

/* SIMAI_ERR_CLOSED once any process destroyed the store. */
int simai_env_check(struct simai_env *e, const char *url);

int simai_read_txn(struct simai_env *e, const char *url, MDB_txn **txn);

/* What a write transaction does, given the transaction and `arg`: SIMAI_OK to commit. */
typedef int (*simai_work)(MDB_txn *txn, struct simai_env *e, void *arg);

/* Run `work` in one write transaction that writes `entries` entries of `nbytes` bytes in all,
 * with the data file's pages allocated ahead of it, and commit it, waking whoever waits for
 * a change; abort on any error. */
int simai_transact(struct simai_env *e, const char *url, simai_work work, void *arg,
                   uint64_t nbytes, int entries);

/* SIMAI_OK once check(arg) returns SIMAI_OK (or its error), SIMAI_ERR_TIMEOUT at the
 * monotonic `deadline` (< 0: none). check returns SIMAI_WAIT_AGAIN while there is nothing
 * yet; between calls this sleeps until a writer commits. */
#define SIMAI_WAIT_AGAIN (-1)
int simai_wait_until(struct simai_env *e, const char *url, int (*check)(void *arg), void *arg,
                     double deadline);

double simai_now(void);
/* The monotonic deadline `timeout` seconds from now (< 0: none); SIMAI_ERR_INVALID if NaN. */
int simai_deadline(double timeout, double *deadline);

/* An LMDB error as a simai code and message about `what`. */
int simai_lmdb_fail(int rc, const char *url, const char *what);

#endif

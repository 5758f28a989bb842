/* The LMDB environment of a store, its notify page, write transactions and waiting: the same
 * invariants as local.py keeps, so Python and C processes can share one store.
 *
 * The notify file holds 32-bit words (the sequence number writers bump after a commit that
 * someone waits for, the destroyed flag, the count of waiters and their pids) and, from byte
 * 4096, the 64-bit bookkeeping of the data file's pages allocated ahead of LMDB. All of it
 * is written holding LMDB's write lock. */
#define _GNU_SOURCE
#include "env.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "paths.h"

#define MAX_READERS 4096
#define NOTIFY_BYTES 8192
#define TXN_PAGES 32
#define SLACK ((uint64_t)64 << 20)
#define GRAIN ((uint64_t)2 << 20)
#define KEEP ((uint64_t)1 << 20)
#define WAIT_SLICE 1.0
/* notify page, 32-bit words */
enum { SEQ = 0, DESTROYED = 1, WAITERS = 2, SLOTS = 3, NSLOTS = 4096 / 4 - SLOTS };
/* notify page, 64-bit words from byte 4096 */
enum { RESERVED = 0, END = 1, PENDING = 2 };

static pthread_mutex_t opening = PTHREAD_MUTEX_INITIALIZER;
static struct simai_env *opened;

static void futex_wake(uint32_t *addr);

static uint32_t load32(uint32_t *w)
{
    return __atomic_load_n(w, __ATOMIC_SEQ_CST);
}

static void store32(uint32_t *w, uint32_t x)
{
    __atomic_store_n(w, x, __ATOMIC_SEQ_CST);
}

int simai_lmdb_fail(int rc, const char *url, const char *what)
{
    if (rc == MDB_MAP_FULL || rc == ENOSPC)
        return simai_fail(SIMAI_ERR_FULL, "store %s is full (%s): delete values or streams, or "
                          "destroy old stores", url, what);
    if (rc == ENOMEM)
        return simai_fail(SIMAI_ERR_NOMEM, "store %s: out of memory (%s)", url, what);
    return simai_fail(SIMAI_ERR_IO, "store %s: %s failed: %s", url, what, mdb_strerror(rc));
}

/* --- opening ------------------------------------------------------------------------------- */

/* Refuse files in the store that are not this user's own regular files (local.py _Env). */
static int check_files(const char *root)
{
    static const char *const names[] = {"data.mdb", "lock.mdb", "notify"};
    for (size_t i = 0; i < 3; i++) {
        char path[PATH_MAX + 16], who[300];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", root, names[i]);
        if (lstat(path, &st))
            continue;
        if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
            simai_owner_name(st.st_uid, who, sizeof who);
            return simai_fail(SIMAI_ERR_PERMISSION,
                              "%s is not a regular file of yours (owner %s); simai will not "
                              "open this store",
                              path, who);
        }
    }
    return SIMAI_OK;
}

static int open_dbs(struct simai_env *e, const char *url)
{
    static const char *const names[] = {"values", "payloads", "meta"};
    MDB_dbi *dbis[] = {&e->values, &e->payloads, &e->meta};
    MDB_txn *txn;
    int rc = simai_read_txn(e, url, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < 3 && !rc; i++)
        rc = mdb_dbi_open(txn, names[i], 0, dbis[i]);
    if (!rc) {
        rc = mdb_txn_commit(txn); /* the handles stay open for later transactions */
        return rc ? simai_lmdb_fail(rc, url, "opening its databases") : SIMAI_OK;
    }
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND)
        return simai_lmdb_fail(rc, url, "opening its databases");
    return SIMAI_WAIT_AGAIN; /* a new store: the caller creates them in a write transaction */
}

static int create_dbs(MDB_txn *txn, struct simai_env *e, void *arg)
{
    static const char *const names[] = {"values", "payloads", "meta"};
    MDB_dbi *dbis[] = {&e->values, &e->payloads, &e->meta};
    for (int i = 0; i < 3; i++) {
        int rc = mdb_dbi_open(txn, names[i], MDB_CREATE, dbis[i]);
        if (rc)
            return simai_lmdb_fail(rc, (const char *)arg, "creating its databases");
    }
    return SIMAI_OK;
}

static int map_notify(struct simai_env *e, const char *url)
{
    char path[PATH_MAX + 16];
    void *page;
    int fd, err;
    snprintf(path, sizeof path, "%s/notify", e->root);
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_CREAT, 0600);
    if (fd < 0)
        return simai_fail(SIMAI_ERR_IO, "cannot open store %s: %s (%s)", url, strerror(errno),
                          path);
    /* the page's blocks exist from here on: a full /dev/shm fails now, never as a SIGBUS */
    err = posix_fallocate(fd, 0, NOTIFY_BYTES);
    if (err) {
        close(fd);
        return simai_fail(err == ENOSPC ? SIMAI_ERR_FULL : SIMAI_ERR_IO,
                          "cannot open store %s: %s (%s)", url, strerror(err), path);
    }
    page = mmap(NULL, NOTIFY_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (page == MAP_FAILED)
        return simai_fail(SIMAI_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    e->words = page;
    e->big = (uint64_t *)((char *)page + 4096);
    return SIMAI_OK;
}

static void env_close(struct simai_env *e)
{
    if (e->env)
        mdb_env_close(e->env);
    if (e->words)
        munmap(e->words, NOTIFY_BYTES);
    if (e->data_fd >= 0)
        close(e->data_fd);
    free(e);
}

static int env_open(const char *root, const char *url, struct simai_env **out)
{
    struct simai_env *e = calloc(1, sizeof *e);
    char path[PATH_MAX + 16];
    struct statvfs vfs;
    MDB_stat ms;
    uint64_t gib = (uint64_t)1 << 30, map_size;
    int rc, dead;
    if (!e)
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory opening store %s", url);
    e->data_fd = -1;
    snprintf(e->root, sizeof e->root, "%s", root);
    if ((rc = check_files(root)))
        goto fail;
    if (statvfs(root, &vfs)) {
        rc = simai_fail(SIMAI_ERR_IO, "cannot open store %s: %s (%s)", url, strerror(errno),
                        root);
        goto fail;
    }
    map_size = ((uint64_t)vfs.f_blocks * vfs.f_frsize + gib - 1) / gib * gib;
    if (map_size < gib)
        map_size = gib;
    /* the options local.py opens it with; py-lmdb always adds MDB_NOTLS */
    if ((rc = mdb_env_create(&e->env)) || (rc = mdb_env_set_mapsize(e->env, map_size)) ||
        (rc = mdb_env_set_maxreaders(e->env, MAX_READERS)) ||
        (rc = mdb_env_set_maxdbs(e->env, 3)) ||
        (rc = mdb_env_open(e->env, root,
                           MDB_WRITEMAP | MDB_NOSYNC | MDB_NOMETASYNC | MDB_NORDAHEAD |
                               MDB_NOMEMINIT | MDB_NOTLS,
                           0600))) {
        rc = simai_fail(SIMAI_ERR_IO, "cannot open store %s: %s (%s)", url, mdb_strerror(rc),
                        root);
        goto fail;
    }
    mdb_env_stat(e->env, &ms);
    e->psize = ms.ms_psize;
    e->txn_bytes = TXN_PAGES * e->psize;
    if ((rc = map_notify(e, url)))
        goto fail;
    snprintf(path, sizeof path, "%s/data.mdb", root);
    e->data_fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (e->data_fd < 0) {
        rc = simai_fail(SIMAI_ERR_IO, "cannot open store %s: %s (%s)", url, strerror(errno),
                        path);
        goto fail;
    }
    rc = open_dbs(e, url);
    if (rc == SIMAI_WAIT_AGAIN)
        rc = simai_transact(e, url, create_dbs, (void *)url, 0, 3);
    if (rc)
        goto fail;
    mdb_reader_check(e->env, &dead);
    *out = e;
    return SIMAI_OK;
fail:
    env_close(e);
    return rc;
}

int simai_env_acquire(const char *root, const char *url, struct simai_env **env)
{
    struct stat st;
    struct simai_env *e;
    int rc = SIMAI_OK;
    if (lstat(root, &st))
        return simai_fail(SIMAI_ERR_IO, "cannot open store %s: %s (%s)", url, strerror(errno),
                          root);
    pthread_mutex_lock(&opening);
    for (e = opened; e; e = e->next) /* another process's (inherited through fork) never */
        if (e->dev == st.st_dev && e->ino == st.st_ino && e->pid == getpid() &&
            !load32(&e->words[DESTROYED]))
            break;
    if (e)
        e->refs++;
    else if (!(rc = env_open(root, url, &e))) {
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        e->pid = getpid();
        e->refs = 1;
        e->next = opened;
        opened = e;
    }
    pthread_mutex_unlock(&opening);
    *env = rc ? NULL : e;
    return rc;
}

void simai_env_retain(struct simai_env *e)
{
    pthread_mutex_lock(&opening);
    e->refs++;
    pthread_mutex_unlock(&opening);
}

void simai_env_release(struct simai_env *e)
{
    int last;
    if (!e)
        return;
    pthread_mutex_lock(&opening);
    last = --e->refs == 0;
    if (last)
        for (struct simai_env **p = &opened; *p; p = &(*p)->next)
            if (*p == e) {
                *p = e->next;
                break;
            }
    pthread_mutex_unlock(&opening);
    if (last && e->pid == getpid()) /* a child of fork leaves the parent's to the parent */
        env_close(e);
}

void simai_env_mark_destroyed(struct simai_env *e)
{
    if (!load32(&e->words[DESTROYED])) {
        store32(&e->words[DESTROYED], 1);
        store32(&e->words[SEQ], load32(&e->words[SEQ]) + 1);
        futex_wake(&e->words[SEQ]);
    }
}

int simai_env_check(struct simai_env *e, const char *url)
{
    if (load32(&e->words[DESTROYED]))
        return simai_fail(SIMAI_ERR_CLOSED, "store %s was destroyed", url);
    return SIMAI_OK;
}

/* --- transactions -------------------------------------------------------------------------- */

int simai_read_txn(struct simai_env *e, const char *url, MDB_txn **txn)
{
    int dead, rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_READERS_FULL) {
        mdb_reader_check(e->env, &dead);
        rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, txn);
        if (rc == MDB_READERS_FULL)
            return simai_fail(SIMAI_ERR_IO,
                              "store %s: %d reads are open at once; zero-copy views hold one "
                              "each while they live: release views you no longer need",
                              url, MAX_READERS);
    }
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(e->env, 0);
        rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, txn);
    }
    return rc ? simai_lmdb_fail(rc, url, "beginning a read") : SIMAI_OK;
}

static int write_txn(struct simai_env *e, const char *url, MDB_txn **txn)
{
    int rc = mdb_txn_begin(e->env, NULL, 0, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(e->env, 0);
        rc = mdb_txn_begin(e->env, NULL, 0, txn);
    }
    return rc ? simai_lmdb_fail(rc, url, "beginning a write") : SIMAI_OK;
}

static int full(struct simai_env *e, const char *url)
{
    struct statvfs vfs;
    double left = statvfs(e->root, &vfs) ? 0 : (double)vfs.f_bavail * vfs.f_frsize / (1 << 20);
    return simai_fail(SIMAI_ERR_FULL,
                      "store %s is full: %.0f MiB left on the filesystem of %s; delete values "
                      "or streams, or destroy old stores",
                      url, left, e->root);
}

/* Keep the data file's pages allocated ahead of what LMDB may write in this transaction
 * (called holding the write lock), so a full /dev/shm is an error here instead of SIGBUS when
 * LMDB writes through its mapping. Allocation runs SLACK ahead of LMDB's last page; near a
 * full filesystem, just enough, and writes leave KEEP of it to transactions that only
 * delete. The same arithmetic as LocalStore._reserve, on the same shared words. */
static int reserve(struct simai_env *e, const char *url, uint64_t nbytes, int entries)
{
    uint64_t *big = e->big;
    uint64_t need = nbytes + e->txn_bytes + 2 * (uint64_t)entries * e->psize;
    uint64_t pending = big[PENDING] + need, end, have, least, targets[2];
    MDB_envinfo info;
    int dead, done = 0;
    if (big[END] + pending <= big[RESERVED]) {
        big[PENDING] = pending;
        return SIMAI_OK;
    }
    mdb_env_info(e->env, &info);
    end = ((uint64_t)info.me_last_pgno + 1) * e->psize;
    if (end > big[END])
        mdb_reader_check(e->env, &dead); /* the store grows: let go of dead readers' snapshots */
    have = big[RESERVED];
    least = end + need + (nbytes ? KEEP : 0); /* a full store can still delete */
    targets[0] = (least + SLACK + GRAIN - 1) / GRAIN * GRAIN;
    targets[1] = (least + e->psize - 1) / e->psize * e->psize;
    for (int i = 0; i < 2 && !done; i++) {
        int err;
        if (targets[i] <= have) {
            done = 1;
            break;
        }
        err = posix_fallocate(e->data_fd, (off_t)have, (off_t)(targets[i] - have));
        if (err == ENOSPC)
            continue;
        if (err)
            return simai_fail(SIMAI_ERR_IO, "store %s: allocating its pages failed: %s", url,
                              strerror(err));
        big[RESERVED] = targets[i];
        done = 1;
    }
    if (!done)
        return full(e, url);
    big[END] = end;
    big[PENDING] = need; /* what this transaction may take of the pages reserved */
    return SIMAI_OK;
}

static void futex_wake(uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleep while the shared word holds `expected`, at most `seconds`. */
static void futex_wait(uint32_t *addr, uint32_t expected, double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, NULL, 0);
}

/* Commit, then wake whoever waits for a change (the count is read under the lock). */
static int commit(struct simai_env *e, MDB_txn *txn)
{
    if (load32(&e->words[WAITERS])) {
        uint32_t seq = (uint32_t)mdb_txn_id(txn);
        int rc = mdb_txn_commit(txn);
        if (!rc) {
            store32(&e->words[SEQ], seq);
            futex_wake(&e->words[SEQ]);
        }
        return rc;
    }
    return mdb_txn_commit(txn);
}

int simai_transact(struct simai_env *e, const char *url, simai_work work, void *arg,
                   uint64_t nbytes, int entries)
{
    MDB_txn *txn;
    int rc = write_txn(e, url, &txn);
    if (rc)
        return rc;
    if ((rc = reserve(e, url, nbytes, entries)) || (rc = work(txn, e, arg))) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = commit(e, txn);
    return rc ? simai_lmdb_fail(rc, url, "committing") : SIMAI_OK;
}

/* --- waiting ------------------------------------------------------------------------------- */

double simai_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int simai_deadline(double timeout, double *deadline)
{
    if (isnan(timeout))
        return simai_fail(SIMAI_ERR_INVALID, "timeout is NaN");
    *deadline = timeout < 0 ? -1 : simai_now() + timeout;
    return SIMAI_OK;
}

static int alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Count this process among the waiters (under the write lock, so writers see it), clearing
 * the slots of waiters that died. *slot is the slot taken, or -1 if all are. */
static int enlist(struct simai_env *e, const char *url, int *slot)
{
    uint32_t *w = e->words;
    MDB_txn *txn;
    int rc = write_txn(e, url, &txn);
    if (rc)
        return rc;
    *slot = -1;
    for (int i = SLOTS; i < SLOTS + NSLOTS; i++) {
        uint32_t pid = w[i];
        if (pid && !alive((pid_t)pid)) {
            w[WAITERS]--;
            pid = 0;
        }
        if (!pid) {
            w[i] = (uint32_t)getpid();
            *slot = i;
            break;
        }
    }
    w[WAITERS]++;
    mdb_txn_abort(txn);
    return SIMAI_OK;
}

static void unlist(struct simai_env *e, const char *url, int slot)
{
    MDB_txn *txn;
    if (write_txn(e, url, &txn))
        return; /* the count stays high: writers wake a few times for nothing */
    if (slot >= 0)
        e->words[slot] = 0;
    e->words[WAITERS]--;
    mdb_txn_abort(txn);
}

int simai_wait_until(struct simai_env *e, const char *url, int (*check)(void *arg), void *arg,
                     double deadline)
{
    int slot, rc = check(arg);
    if (rc != SIMAI_WAIT_AGAIN)
        return rc;
    if ((rc = enlist(e, url, &slot)))
        return rc;
    for (;;) {
        uint32_t seq = load32(&e->words[SEQ]);
        double pause = WAIT_SLICE;
        if ((rc = check(arg)) != SIMAI_WAIT_AGAIN || (rc = simai_env_check(e, url)))
            break;
        if (deadline >= 0) {
            double left = deadline - simai_now();
            if (left <= 0) {
                rc = SIMAI_ERR_TIMEOUT;
                break;
            }
            if (left < pause)
                pause = left;
        }
        futex_wait(&e->words[SEQ], seq, pause);
    }
    unlist(e, url, slot);
    return rc;
}

/* The checksum helper: one thread per process that hashes a large payload while the calling
 * thread copies it, so that verifying costs little time beside the copy (Python's client does
 * the same, simai/store/codec.py hash_while).
 *
 * It starts on the first job and then waits for the next. A job is one word's states: the
 * caller posts it, the helper claims it, hashes and marks it done; each side polls a little
 * before it sleeps on a condition variable, as jobs usually come back to back and a sleeping
 * thread is slow to wake. A caller whose copy ends before the helper claimed its job (the
 * helper was asleep, or its CPU busy) takes the job back and hashes it itself, so it never
 * waits on the scheduler for work not begun. The helper serves one caller at a time: a
 * caller that finds it taken, or a process where it cannot start or has one CPU to run on,
 * gets 0 from simai_helper_begin and hashes on its own thread.
 *
 * Fork: the helper does not exist in a child. The child's handler (pthread_atfork) forgets it
 * and the job it may have been doing for another thread of the parent, so the child's first
 * large copy starts a helper of its own. The prepare handler holds the lock across fork(), so
 * the child never inherits it held. At unload (or exit) the helper is told to stop and joined,
 * so that its code is never unmapped under it. */
#define _GNU_SOURCE
#include "hashthread.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "hash.h"

/* how long either side polls before it sleeps, in nanoseconds */
#define SPIN_NS 200000L

enum { STOPPED, RUNNING, FAILED };    /* the helper */
enum { IDLE, POSTED, CLAIMED, DONE }; /* the job */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t posted_cv = PTHREAD_COND_INITIALIZER;   /* the helper sleeps on it */
static pthread_cond_t finished_cv = PTHREAD_COND_INITIALIZER; /* the caller sleeps on it */
static pthread_once_t registered = PTHREAD_ONCE_INIT;
static pthread_t helper;
static int state = STOPPED; /* under lock */
static int quitting;        /* under lock */
static atomic_int taken;    /* a caller holds the helper from begin to end */
static atomic_int job;      /* IDLE, then POSTED by the caller, CLAIMED and DONE by the helper */
static const void *job_p;   /* the job: written before it is POSTED */
static size_t job_n;
static uint64_t job_seed, job_sum; /* job_sum: written before it is DONE */

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Poll until the job is in state `want`, for SPIN_NS at most; whether it is. */
static int spin_until(int want)
{
    long long end = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&job, memory_order_acquire) == want)
            return 1;
        relax();
        if ((i & 255) == 255) { /* the clock, now and then: it costs more than a poll */
            long long t = now_ns();
            if (!end)
                end = t + SPIN_NS;
            else if (t >= end)
                return 0;
        }
    }
}

static void *helper_main(void *arg)
{
    (void)arg;
    for (;;) {
        int posted = POSTED;
        if (!spin_until(POSTED)) {
            pthread_mutex_lock(&lock);
            while (atomic_load_explicit(&job, memory_order_acquire) != POSTED && !quitting)
                pthread_cond_wait(&posted_cv, &lock);
            if (quitting) { /* a job posted meanwhile is its caller's to take back */
                pthread_mutex_unlock(&lock);
                return NULL;
            }
            pthread_mutex_unlock(&lock);
        }
        /* the caller may have taken it back (it finished its copy first) */
        if (!atomic_compare_exchange_strong_explicit(&job, &posted, CLAIMED,
                                                     memory_order_acquire, memory_order_relaxed))
            continue;
        job_sum = simai_xxh3(job_p, job_n, job_seed);
        atomic_store_explicit(&job, DONE, memory_order_release);
        pthread_mutex_lock(&lock); /* the caller may sleep: wake it */
        pthread_cond_signal(&finished_cv);
        pthread_mutex_unlock(&lock);
    }
}

static void before_fork(void)
{
    pthread_mutex_lock(&lock);
}

static void after_fork_parent(void)
{
    pthread_mutex_unlock(&lock);
}

/* The child has no helper: forget it, and any job it had, with fresh condition variables
 * (the parent's may count waiters the child does not have). */
static void after_fork_child(void)
{
    pthread_cond_t fresh = PTHREAD_COND_INITIALIZER;
    memcpy(&posted_cv, &fresh, sizeof fresh);
    memcpy(&finished_cv, &fresh, sizeof fresh);
    if (state == RUNNING)
        state = STOPPED;
    quitting = 0;
    atomic_store(&job, IDLE);
    atomic_store(&taken, 0);
    pthread_mutex_unlock(&lock);
}

static void register_fork(void)
{
    if (pthread_atfork(before_fork, after_fork_parent, after_fork_child))
        state = FAILED; /* a helper a child could not forget must not start */
}

/* Stop and join the helper when libsimai is unloaded or the process exits. */
__attribute__((destructor)) static void stop_helper(void)
{
    int running;
    pthread_mutex_lock(&lock);
    running = state == RUNNING;
    if (running) {
        quitting = 1;
        pthread_cond_signal(&posted_cv);
    }
    pthread_mutex_unlock(&lock);
    if (running && pthread_join(helper, NULL) == 0) {
        pthread_mutex_lock(&lock);
        state = FAILED; /* not again in this process */
        pthread_mutex_unlock(&lock);
    }
}

/* The CPUs this thread may run on (2 when the kernel does not say: at least try). */
static int cpus(void)
{
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) ? 2 : CPU_COUNT(&set);
}

/* Start the helper unless it runs or cannot; whether it runs. Called holding `lock`. */
static int start_locked(void)
{
    sigset_t all, old;
    if (state != STOPPED)
        return state == RUNNING;
    sigfillset(&all); /* the helper takes none of the process's signals */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    state = pthread_create(&helper, NULL, helper_main, NULL) ? FAILED : RUNNING;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return state == RUNNING;
}

int simai_helper_begin(const void *p, size_t n, uint64_t seed)
{
    int ok;
    pthread_once(&registered, register_fork);
    if (atomic_exchange_explicit(&taken, 1, memory_order_acquire))
        return 0; /* another thread's job */
    if (cpus() < 2) { /* two threads on one CPU would take turns, not overlap */
        atomic_store_explicit(&taken, 0, memory_order_release);
        return 0;
    }
    pthread_mutex_lock(&lock);
    ok = start_locked();
    if (ok) {
        job_p = p;
        job_n = n;
        job_seed = seed;
        atomic_store_explicit(&job, POSTED, memory_order_release);
        pthread_cond_signal(&posted_cv);
    }
    pthread_mutex_unlock(&lock);
    if (!ok)
        atomic_store_explicit(&taken, 0, memory_order_release);
    return ok;
}

uint64_t simai_helper_end(void)
{
    int posted = POSTED;
    uint64_t sum;
    if (atomic_compare_exchange_strong_explicit(&job, &posted, IDLE, memory_order_acquire,
                                                memory_order_relaxed)) {
        /* the helper has not started it (it is asleep, or its CPU busy): hash here */
        sum = simai_xxh3(job_p, job_n, job_seed);
    } else {
        if (!spin_until(DONE)) {
            pthread_mutex_lock(&lock);
            while (atomic_load_explicit(&job, memory_order_acquire) != DONE)
                pthread_cond_wait(&finished_cv, &lock);
            pthread_mutex_unlock(&lock);
        }
        sum = job_sum;
        atomic_store_explicit(&job, IDLE, memory_order_relaxed);
    }
    atomic_store_explicit(&taken, 0, memory_order_release);
    return sum;
}

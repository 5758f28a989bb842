/* store_bench: the producer -> consumer workload of benchmarks/store.py, from C.
 *
 *   store_bench BACKEND REPEAT WARMUP SIZE:N [SIZE:N ...]
 *
 * BACKEND is simai:URL (get into one reused buffer), simai-new:URL (get into a new malloc'd
 * buffer each time), simai-alloc:URL (get into a new buffer simai_get_alloc allocates, freed
 * with simai_free), memcpy, memcpy-new or memcpy-alloc (each process copies into n
 * preallocated slots and out of them with glibc's memcpy, as np.copyto is in store.py;
 * -new into a new malloc'd buffer, -alloc into a fresh one allocated as simai_get_alloc
 * allocates: advised to use huge pages). The process forks a
 * consumer; per size and repetition the producer puts N float32 arrays of SIZE bytes under
 * bench/SIZE/I (element 0 a per-put stamp), then the consumer gets and checks them; pipes
 * keep the two in step, so a put never overlaps a get. Each side times its own operations.
 * Prints one JSON line: per size, put and get GB/s (median over repetitions) and median
 * latency, and the 8 KiB put + get round trip in one process (when 8 KiB is a size).
 */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <simai.h>

#define MAX_SIZES 16
#define MAX_REPEAT 100
#define RT_SIZE 8192
#define RT_ITERS 2000
#define RT_BUDGET_NS 2000000000LL
#define HUGE_PAGE ((size_t)2 << 20)
#define REUSED_MAX ((size_t)32 << 20)

enum { REUSED, MALLOC, ALLOC }; /* where a get goes */

typedef struct bench {
    const char *url; /* NULL: memcpy */
    int fresh;       /* REUSED: get into one buffer; MALLOC, ALLOC: into a new one each time */
    simai_store *store;
    float **slots; /* memcpy: one per key */
    size_t nslots;
    float *dst; /* the reused get buffer */
} bench;

typedef struct stats {
    double gbps, lat_s;
} stats;

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v), as statistics.median. */
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The payload of benchmarks/_bench_loop.py: element k is k % 4093. */
static void fill(float *a, size_t count)
{
    for (size_t k = 0; k < count; k++)
        a[k] = (float)(k % 4093);
}

static int fail(const char *what)
{
    fprintf(stderr, "store_bench: %s\n", what);
    return 1;
}

static int fail_simai(const char *what, int rc)
{
    fprintf(stderr, "store_bench: %s: %s %s\n", what, simai_code_name(rc), simai_last_error());
    return 1;
}

static void unprepare(bench *b)
{
    for (size_t i = 0; i < b->nslots; i++)
        free(b->slots[i]);
    free(b->slots);
    free(b->dst);
    b->slots = NULL, b->nslots = 0, b->dst = NULL;
}

/* Buffers for n values of `size` bytes, touched so that no timed copy takes page faults. */
static int prepare(bench *b, size_t size, size_t n)
{
    unprepare(b);
    if (!(b->dst = malloc(size)))
        return fail("out of memory");
    memset(b->dst, 0, size);
    if (b->url)
        return 0;
    if (!(b->slots = calloc(n, sizeof *b->slots)))
        return fail("out of memory");
    for (; b->nslots < n; b->nslots++) {
        if (!(b->slots[b->nslots] = malloc(size)))
            return fail("out of memory");
        fill(b->slots[b->nslots], size / 4);
    }
    return 0;
}

static int put(bench *b, const char *key, size_t i, const float *src, size_t size)
{
    uint64_t shape = size / 4;
    int rc;
    if (!b->url) {
        memcpy(b->slots[i], src, size);
        return 0;
    }
    rc = simai_put_array(b->store, key, SIMAI_DTYPE_F32, 1, &shape, src, 0);
    return rc ? fail_simai("put", rc) : 0;
}

/* Advise the 2 MiB aligned ranges of p[0..n) to use transparent huge pages. */
static void advise_huge(void *p, size_t n)
{
    uintptr_t start = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t end = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_HUGEPAGE);
}

/* A new buffer as simai_get_alloc allocates one (native/src/entry.c simai_alloc): malloc'd
 * and advised up to 32 MiB, whole aligned huge pages above. */
static void *alloc_like_simai(size_t size)
{
    size_t whole = (size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = size <= REUSED_MAX ? malloc(size) : aligned_alloc(HUGE_PAGE, whole);
    if (p)
        advise_huge(p, size <= REUSED_MAX ? size : whole);
    return p;
}

/* Read value i into *out: b->dst, or a new buffer (freed by done_with) when b->fresh. */
static int get(bench *b, const char *key, size_t i, size_t size, float **out)
{
    uint64_t shape = size / 4;
    simai_info info;
    int rc;
    *out = b->dst;
    if (b->url && b->fresh == ALLOC) {
        void *data;
        rc = simai_get_alloc(b->store, key, &data, &info);
        if (!rc && (info.kind != SIMAI_KIND_ARRAY || info.nbytes != size))
            return simai_free(data), fail("get: another value than was put");
        *out = data;
        return rc ? fail_simai("get", rc) : 0;
    }
    if (b->fresh && !(*out = b->fresh == ALLOC ? alloc_like_simai(size) : malloc(size)))
        return fail("out of memory");
    if (!b->url) {
        memcpy(*out, b->slots[i], size);
        return 0;
    }
    rc = simai_get_array(b->store, key, SIMAI_DTYPE_F32, 1, &shape, *out, 0);
    return rc ? fail_simai("get", rc) : 0;
}

static void done_with(bench *b, float *v)
{
    if (v == b->dst)
        return;
    if (b->url && b->fresh == ALLOC)
        simai_free(v);
    else
        free(v);
}

static int send_byte(int fd, char c)
{
    return write(fd, &c, 1) == 1 ? 0 : fail("peer lost");
}

static int recv_byte(int fd, char want)
{
    char c = 0;
    return read(fd, &c, 1) == 1 && c == want ? 0 : fail("peer lost sync");
}

/* Bandwidth of each repetition (its times[r * n ..]), median over repetitions, and the median
 * single-operation latency. */
static stats summarize(double *times, int repeat, size_t n, size_t size)
{
    stats st;
    double gbps[MAX_REPEAT];
    for (int r = 0; r < repeat; r++) {
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += times[r * n + i];
        gbps[r] = (double)n * size / sum; /* bytes per ns: GB/s */
    }
    st.gbps = median(gbps, repeat);
    st.lat_s = median(times, repeat * n) * 1e-9;
    return st;
}

/* One size, one role; times[] has repeat * n entries (ns, warm-up not kept). */
static int run_size(bench *b, int producer, int to_peer, int from_peer, size_t size, size_t n,
                    int repeat, int warmup, double *times)
{
    float *src = malloc(size), *v;
    char key[64];
    if (!src || prepare(b, size, n))
        return free(src), fail("out of memory");
    fill(src, size / 4);
    for (int r = 0; r < warmup + repeat; r++) {
        if (producer ? recv_byte(from_peer, 'g') : send_byte(to_peer, 'g'))
            return free(src), 1;
        if (!producer && recv_byte(from_peer, 'r'))
            return free(src), 1;
        for (size_t i = 0; i < n; i++) {
            long long t0;
            float stamp = (float)(r * n + i);
            snprintf(key, sizeof key, "bench/%zu/%zu", size, i);
            if (producer) {
                src[0] = stamp;
                t0 = now_ns();
                if (put(b, key, i, src, size))
                    return free(src), 1;
            } else {
                t0 = now_ns();
                if (get(b, key, i, size, &v))
                    return free(src), 1;
            }
            if (r >= warmup)
                times[(r - warmup) * n + i] = (double)(now_ns() - t0);
            if (producer)
                continue;
            /* check the stamp, and in warm-up every element (memcpy reads its own slots) */
            int bad = b->url && (v[0] != stamp || (r < warmup && memcmp(v + 1, src + 1,
                                                                         size - 4) != 0));
            done_with(b, v);
            if (bad)
                return free(src), fail("wrong value read");
        }
        if (producer && send_byte(to_peer, 'r'))
            return free(src), 1;
    }
    free(src);
    if (producer ? recv_byte(from_peer, 'd') : send_byte(to_peer, 'd'))
        return 1;
    for (size_t i = 0; producer && b->url && i < n; i++) {
        snprintf(key, sizeof key, "bench/%zu/%zu", size, i);
        simai_delete(b->store, key, NULL);
    }
    return 0;
}

/* Median seconds of put(8 KiB) then get of the same key, in one process. */
static int roundtrip(bench *b, double *out)
{
    double *times = malloc(RT_ITERS * sizeof *times);
    float *src = malloc(RT_SIZE), *v;
    long long end = now_ns() + RT_BUDGET_NS;
    int k = 0;
    if (!times || !src || prepare(b, RT_SIZE, 1))
        return free(times), free(src), fail("out of memory");
    fill(src, RT_SIZE / 4);
    for (; k < RT_ITERS; k++) {
        long long t0 = now_ns();
        src[0] = (float)k;
        if (put(b, "bench/roundtrip", 0, src, RT_SIZE) ||
            get(b, "bench/roundtrip", 0, RT_SIZE, &v))
            return free(times), free(src), 1;
        times[k] = (double)(now_ns() - t0);
        int stale = b->url && v[0] != (float)k;
        done_with(b, v);
        if (stale)
            return free(times), free(src), fail("round trip read a stale value");
        if (k >= 20 && now_ns() > end) {
            k++;
            break;
        }
    }
    *out = median(times, k) * 1e-9;
    free(times), free(src);
    return 0;
}

static int open_backend(bench *b, const char *spec)
{
    b->fresh = strstr(spec, "-new") ? MALLOC : strstr(spec, "-alloc") ? ALLOC : REUSED;
    if (strncmp(spec, "memcpy", 6) == 0)
        return 0;
    b->url = strchr(spec, ':') + 1;
    int rc = simai_open_url(b->url, &b->store);
    return rc ? fail_simai("open", rc) : 0;
}

int main(int argc, char **argv)
{
    size_t sizes[MAX_SIZES], counts[MAX_SIZES], most = 0;
    int nsizes = argc - 4, to_cons[2], to_prod[2], results[2], repeat, warmup, status = 0;
    stats put_st[MAX_SIZES], get_st[MAX_SIZES];
    double rt = -1;
    bench b = {0};
    pid_t child;
    if (argc < 5 || nsizes > MAX_SIZES ||
        (strncmp(argv[1], "memcpy", 6) && !strchr(argv[1], ':'))) {
        fprintf(stderr, "usage: store_bench simai[-new|-alloc]:URL|memcpy[-new|-alloc] "
                        "REPEAT WARMUP SIZE:N...\n");
        return 2;
    }
    repeat = atoi(argv[2]), warmup = atoi(argv[3]);
    for (int s = 0; s < nsizes; s++) {
        if (sscanf(argv[4 + s], "%zu:%zu", &sizes[s], &counts[s]) != 2 || sizes[s] % 4 ||
            sizes[s] < 8 || counts[s] < 1 || repeat < 1 || repeat > MAX_REPEAT || warmup < 0)
            return fail("bad SIZE:N, REPEAT or WARMUP");
        most = counts[s] > most ? counts[s] : most;
    }
    double *times = malloc(repeat * most * sizeof *times);
    if (!times || pipe(to_cons) || pipe(to_prod) || pipe(results))
        return fail("out of memory or pipes");
    fflush(stdout);
    if ((child = fork()) < 0)
        return fail("fork failed");
    int producer = child > 0; /* the child is the consumer; each opens its own handle */
    /* keep only this role's pipe ends, so that either side sees EOF when the other dies */
    close(producer ? to_cons[0] : to_cons[1]);
    close(producer ? to_prod[1] : to_prod[0]);
    close(producer ? results[1] : results[0]);
    if (open_backend(&b, argv[1]))
        return 1;
    int to_peer = producer ? to_cons[1] : to_prod[1];
    int from_peer = producer ? to_prod[0] : to_cons[0];
    for (int s = 0; s < nsizes && !status; s++) {
        status = run_size(&b, producer, to_peer, from_peer, sizes[s], counts[s], repeat, warmup,
                          times);
        if (!status && producer)
            put_st[s] = summarize(times, repeat, counts[s], sizes[s]);
        if (!status && !producer) {
            stats st = summarize(times, repeat, counts[s], sizes[s]);
            status = write(results[1], &st, sizeof st) != sizeof st;
        }
    }
    if (!producer) {
        unprepare(&b);
        simai_close(b.store);
        free(times);
        _exit(status);
    }
    close(to_peer);
    for (int s = 0; s < nsizes && !status; s++)
        if (read(results[0], &get_st[s], sizeof get_st[s]) != sizeof get_st[s])
            status = fail("the consumer gave no result");
    for (int s = 0; s < nsizes && !status; s++)
        if (sizes[s] == RT_SIZE)
            status = roundtrip(&b, &rt);
    waitpid(child, NULL, 0);
    unprepare(&b);
    simai_close(b.store);
    free(times);
    if (status)
        return status;
    const char *op[2] = {"put", "get"};
    printf("{");
    for (int o = 0; o < 2; o++) {
        printf("\"%s\": {", op[o]);
        for (int s = 0; s < nsizes; s++) {
            stats st = o ? get_st[s] : put_st[s];
            printf("%s\"%zu\": {\"gbps\": %.6g, \"lat_s\": %.6g, \"per_rep\": %zu}",
                   s ? ", " : "", sizes[s], st.gbps, st.lat_s, counts[s]);
        }
        printf("}, ");
    }
    printf("\"roundtrip_s\": %.6g}\n", rt); /* -1: no 8 KiB size */
    return 0;
}

/* surrogate_bench: time calls of a published model from C through libsimai_torch.
 *
 *   surrogate_bench URL NAME ROWS COLS CALLS
 *
 * Loads the newest version of model NAME (the check for newer versions is put off for an
 * hour, so that no call reads the store), runs it on the batch x[i][j] = ((i * COLS + j) %
 * 97) / 97 - 0.5 of ROWS x COLS float32 (benchmarks/native.py gives Python's Surrogate the
 * same), CALLS / 10 untimed calls first, then CALLS timed ones. Prints one JSON line: the
 * median and mean seconds a call, the version and the sum of the outputs (to compare with
 * Python's).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <simai_torch.h>

#define MAX_OUT (1 << 24)

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

static int fail(const char *what, int rc)
{
    fprintf(stderr, "surrogate_bench: %s: %s %s\n", what, simai_code_name(rc),
            simai_torch_last_error()[0] ? simai_torch_last_error() : simai_last_error());
    return 1;
}

/* Time `calls` calls after calls / 10 untimed ones; times[] gets ns per timed call. */
static int run(simai_surrogate *s, uint64_t rows, uint64_t cols, int calls, double *times,
               double *sum, int64_t *version)
{
    uint64_t shape[2] = {rows, cols}, y_shape[SIMAI_MAX_NDIM];
    float *x = malloc(rows * cols * sizeof *x), *y = malloc(MAX_OUT * sizeof *y);
    int y_ndim = 0, rc = SIMAI_ERR_NOMEM;
    if (!x || !y)
        goto out;
    for (uint64_t k = 0; k < rows * cols; k++)
        x[k] = (float)(k % 97) / 97.0f - 0.5f;
    for (int c = -(calls / 10); c < calls; c++) {
        long long t0 = now_ns();
        rc = simai_surrogate_run(s, 2, shape, x, y, MAX_OUT, &y_ndim, y_shape, 0, version);
        if (rc != SIMAI_OK)
            goto out;
        if (c >= 0)
            times[c] = (double)(now_ns() - t0);
    }
    uint64_t n = 1;
    for (int d = 0; d < y_ndim; d++)
        n *= y_shape[d];
    *sum = 0;
    for (uint64_t k = 0; k < n; k++)
        *sum += y[k];
out:
    free(x), free(y);
    return rc;
}

int main(int argc, char **argv)
{
    simai_store *store = NULL;
    simai_surrogate *s = NULL;
    int64_t version = 0;
    double sum = 0, total = 0;
    int rc, calls = argc == 6 ? atoi(argv[5]) : 0;
    if (calls < 1) {
        fprintf(stderr, "usage: surrogate_bench URL NAME ROWS COLS CALLS\n");
        return 2;
    }
    double *times = malloc(calls * sizeof *times);
    if (!times)
        return fail("malloc", SIMAI_ERR_NOMEM);
    if ((rc = simai_open_url(argv[1], &store)))
        return fail("open", rc);
    if ((rc = simai_surrogate_open(store, argv[2], 3600, 1, &s)) ||
        (rc = simai_surrogate_wait(s, 60, &version)) ||
        (rc = run(s, strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10), calls, times,
                  &sum, &version)))
        fail("surrogate", rc);
    simai_surrogate_close(s);
    simai_close(store);
    if (rc)
        return free(times), 1;
    for (int c = 0; c < calls; c++)
        total += times[c];
    qsort(times, calls, sizeof *times, cmp_double);
    printf("{\"median_s\": %.6g, \"mean_s\": %.6g, \"version\": %lld, \"sum\": %.9g}\n",
           times[calls / 2] * 1e-9, total / calls * 1e-9, (long long)version, sum);
    free(times);
    return 0;
}

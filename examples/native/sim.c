/* heat: a 1-D heat equation split over MPI ranks, whose kernel a surrogate takes over.
 *
 *   mpiexec -n RANKS heat_c POINTS STEPS WARMUP CHECK_EVERY MAX_ERROR POLL
 *
 * The same program as examples/native/sim.f90 (read its header), in C: u[0] and u[n + 1] are
 * the halo cells, and the stream entries are the same (POINTS, 4) float64 arrays. */
#include <math.h>
#include <mpi.h>
#include <simai.h>
#include <simai_torch.h>
#include <stdio.h>
#include <stdlib.h>

#define R 0.25           /* alpha dt / dx^2: stable up to 0.5 */
#define MAX_VERSIONS 64  /* the versions a rank records, in order */

typedef struct {
    int n, steps, warmup, check_every, rank, ranks;
    double max_error, poll;
    double *u, *exact, *next, *sample; /* u: n + 2 cells; sample: n x 4, row-major */
    float *x, *y;                      /* the surrogate's batch (n, 3) and output (n, 1) */
    simai_store *store;
    simai_surrogate *model;
    int ready, appended, calls, checks, passed, fallbacks, errors, nused;
    int64_t used[MAX_VERSIONS];
} heat;

static void fail(const heat *h, const char *message) {
    fprintf(stderr, "heat rank %d: %s\n", h->rank, message);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* Two sine modes over the whole rod, cell centres at (g - 1/2) / (n ranks). */
static void initial(heat *h) {
    const double two_pi = 8 * atan(1.0);
    for (int i = 1; i <= h->n; i++) {
        double s = (h->rank * h->n + i - 0.5) / ((double)h->n * h->ranks);
        h->u[i] = sin(two_pi * s) + 0.5 * sin(3 * two_pi * s);
    }
}

/* The periodic neighbours' edge cells into u[0] and u[n + 1]. */
static void exchange_halos(heat *h) {
    int left = (h->rank + h->ranks - 1) % h->ranks, right = (h->rank + 1) % h->ranks;
    MPI_Sendrecv(&h->u[h->n], 1, MPI_DOUBLE, right, 0, &h->u[0], 1, MPI_DOUBLE, left, 0,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Sendrecv(&h->u[1], 1, MPI_DOUBLE, left, 1, &h->u[h->n + 1], 1, MPI_DOUBLE, right, 1,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

static void exact_kernel(const heat *h, double *out) {
    const double *u = h->u;
    for (int i = 1; i <= h->n; i++)
        out[i - 1] = u[i] + R * (u[i - 1] - 2 * u[i] + u[i + 1]);
}

/* A training sample: the stencil's inputs and the exact update `target` of every cell. */
static void append_sample(heat *h, const double *target) {
    uint64_t shape[2] = {(uint64_t)h->n, 4};
    for (int i = 0; i < h->n; i++) {
        double *row = &h->sample[4 * i];
        row[0] = h->u[i], row[1] = h->u[i + 1], row[2] = h->u[i + 2], row[3] = target[i];
    }
    if (simai_append_array(h->store, "heat/samples", SIMAI_DTYPE_F64, 2, shape, h->sample, 0,
                           -1, NULL))
        fail(h, simai_last_error());
    h->appended++;
}

/* Log a version the first step it answered. */
static void record(heat *h, int64_t version, int step) {
    printf("heat rank %d step %d: model version %lld\n", h->rank, step, (long long)version);
    fflush(stdout);
    if (h->nused < MAX_VERSIONS)
        h->used[h->nused++] = version;
}

/* next from the surrogate (the exact kernel when none answers), checked every check_every
 * calls. */
static void surrogate_step(heat *h, int step) {
    uint64_t shape[2] = {(uint64_t)h->n, 3}, y_shape[SIMAI_MAX_NDIM];
    int64_t version = 0;
    int y_ndim;
    if (!h->ready) { /* the first surrogate step waits for a version */
        simai_surrogate_wait(h->model, 60.0, &version);
        h->ready = 1;
    }
    for (int i = 0; i < h->n; i++)
        for (int k = 0; k < 3; k++)
            h->x[3 * i + k] = (float)h->u[i + k];
    if (simai_surrogate_run(h->model, 2, shape, h->x, h->y, (size_t)h->n, &y_ndim, y_shape, 0,
                            &version)) {
        fprintf(stderr, "heat rank %d step %d: %s\n", h->rank, step, simai_torch_last_error());
        h->errors++;
        exact_kernel(h, h->next);
        return;
    }
    h->calls++;
    if (h->nused == 0 || h->used[h->nused - 1] != version)
        record(h, version, step);
    for (int i = 0; i < h->n; i++)
        h->next[i] = h->y[i];
    if (h->calls % h->check_every)
        return;
    exact_kernel(h, h->exact);
    append_sample(h, h->exact); /* the check's exact step is fresh data too */
    double diff = 0, update = 0;
    for (int i = 0; i < h->n; i++) {
        diff += (h->next[i] - h->exact[i]) * (h->next[i] - h->exact[i]);
        update += (h->exact[i] - h->u[i + 1]) * (h->exact[i] - h->u[i + 1]);
    }
    h->checks++;
    if (sqrt(diff) <= h->max_error * sqrt(update)) {
        h->passed++;
    } else {
        h->fallbacks++;
        for (int i = 0; i < h->n; i++)
            h->next[i] = h->exact[i];
    }
}

static void put_report(heat *h) {
    char text[2048], key[32];
    int at = snprintf(text, sizeof text,
                      "{\"language\": \"c\", \"rank\": %d, \"steps\": %d, \"appended\": %d, "
                      "\"surrogate_calls\": %d, \"checks\": %d, \"passed\": %d, "
                      "\"fallbacks\": %d, \"versions\": [",
                      h->rank, h->steps, h->appended, h->calls,
                      h->checks, h->passed, h->fallbacks);
    for (int i = 0; i < h->nused; i++)
        at += snprintf(text + at, sizeof text - at, "%s%lld", i ? ", " : "",
                       (long long)h->used[i]);
    snprintf(text + at, sizeof text - at, "], \"errors\": %d}", h->errors);
    snprintf(key, sizeof key, "heat/report/%d", h->rank);
    if (simai_put_json(h->store, key, text))
        fail(h, simai_last_error());
}

int main(int argc, char **argv) {
    heat h = {0};
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &h.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &h.ranks);
    if (argc != 7)
        fail(&h, "usage: heat_c POINTS STEPS WARMUP CHECK_EVERY MAX_ERROR POLL");
    h.n = atoi(argv[1]), h.steps = atoi(argv[2]), h.warmup = atoi(argv[3]);
    h.check_every = atoi(argv[4]), h.max_error = atof(argv[5]), h.poll = atof(argv[6]);
    h.u = calloc(h.n + 2, sizeof *h.u);
    h.exact = calloc(h.n, sizeof *h.exact);
    h.next = calloc(h.n, sizeof *h.next);
    h.sample = calloc(4 * h.n, sizeof *h.sample);
    h.x = calloc(3 * h.n, sizeof *h.x);
    h.y = calloc(h.n, sizeof *h.y);
    if (!h.u || !h.exact || !h.next || !h.sample || !h.x || !h.y)
        fail(&h, "out of memory");
    initial(&h);

    if (simai_open(&h.store)) /* the run's store, from $SIMAI_STORE */
        fail(&h, simai_last_error());
    if (simai_surrogate_open(h.store, "heat", h.poll, 1, &h.model))
        fail(&h, simai_torch_last_error());

    for (int step = 1; step <= h.steps; step++) {
        exchange_halos(&h);
        if (step <= h.warmup) {
            exact_kernel(&h, h.next);
            append_sample(&h, h.next);
        } else {
            surrogate_step(&h, step);
        }
        for (int i = 0; i < h.n; i++)
            h.u[i + 1] = h.next[i];
    }

    put_report(&h);
    simai_surrogate_close(h.model);
    simai_close(h.store);
    free(h.u), free(h.exact), free(h.next), free(h.sample), free(h.x), free(h.y);
    MPI_Finalize();
    return 0;
}

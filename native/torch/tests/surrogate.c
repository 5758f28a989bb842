/* The C side of tests/test_native_torch.py: a surrogate driven by commands on stdin, one
 * answer line each, so the test can publish versions between calls.
 *
 *   surrogate_check URL NAME POLL TRUSTED
 *   run              one call on the 4x2 test batch: "ok VERSION y0 y1 y2 y3" or "err CODE msg"
 *   wide             one call on a 4x3 batch the model refuses
 *   small            one call with room for 2 outputs of 4
 *   refresh          "ok SWAPPED" or "err CODE msg"
 *   wait T           simai_surrogate_wait: "ok VERSION" or "err CODE msg"
 *   until V T        call every 10 ms until version V answers (T seconds at most): the last
 *                    call's answer, after "err" lines for any call that failed or saw the
 *                    version go down
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <simai_torch.h>

static float batch[4][3];

static int call(simai_surrogate *s, int cols, size_t cap, int64_t *version)
{
    uint64_t shape[2] = {4, (uint64_t)cols}, y_shape[SIMAI_MAX_NDIM];
    float x[12], y[4];
    int y_ndim = 0, rc;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < cols; j++)
            x[i * cols + j] = batch[i][j];
    rc = simai_surrogate_run(s, 2, shape, x, y, cap, &y_ndim, y_shape, 0, version);
    if (rc != SIMAI_OK) {
        printf("err %s %s\n", simai_code_name(rc), simai_torch_last_error());
        return rc;
    }
    printf("ok %lld", (long long)*version);
    for (uint64_t i = 0; i < y_shape[0] * (y_ndim == 2 ? y_shape[1] : 1); i++)
        printf(" %.9g", y[i]);
    printf("\n");
    return rc;
}

static void until(simai_surrogate *s, int64_t want, double seconds)
{
    struct timespec pause = {0, 10 * 1000 * 1000};
    int64_t version = 0, last = 0;
    for (int n = 0; n * 0.01 < seconds; n++) {
        uint64_t shape[2] = {4, 2}, y_shape[SIMAI_MAX_NDIM];
        float y[4];
        int y_ndim, rc = simai_surrogate_run(s, 2, shape, &batch[0][0], y, 4, &y_ndim, y_shape,
                                             0, &version);
        if (rc != SIMAI_OK)
            printf("err %s %s\n", simai_code_name(rc), simai_torch_last_error());
        else if (version < last)
            printf("err version went down from %lld to %lld\n", (long long)last,
                   (long long)version);
        last = version;
        if (version >= want)
            break;
        nanosleep(&pause, NULL);
    }
    call(s, 2, 4, &version);
}

int main(int argc, char **argv)
{
    simai_store *store;
    simai_surrogate *s;
    char line[256];
    double poll;
    int rc;
    if (argc != 5 || sscanf(argv[3], "%lf", &poll) != 1)
        return fprintf(stderr, "usage: %s URL NAME POLL TRUSTED\n", argv[0]), 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 4; i++) /* the batch of test_native_torch.py's BATCH */
        for (int j = 0; j < 3; j++)
            batch[i][j] = i * 0.5f + j * 0.25f - 1.0f;
    if ((rc = simai_open_url(argv[1], &store)) != SIMAI_OK)
        return printf("err %s %s\n", simai_code_name(rc), simai_last_error()), 1;
    rc = simai_surrogate_open(store, argv[2], poll, argv[4][0] == '1', &s);
    if (rc == SIMAI_OK)
        printf("open SIMAI_OK\n");
    else
        printf("open %s %s\n", simai_code_name(rc), simai_torch_last_error());
    while (rc == SIMAI_OK && fgets(line, sizeof line, stdin)) {
        int64_t version = 0;
        double t;
        long long want;
        int swapped;
        if (strcmp(line, "run\n") == 0) {
            call(s, 2, 4, &version);
        } else if (strcmp(line, "wide\n") == 0) {
            call(s, 3, 4, &version);
        } else if (strcmp(line, "small\n") == 0) {
            call(s, 2, 2, &version);
        } else if (strcmp(line, "refresh\n") == 0) {
            int r = simai_surrogate_refresh(s, &swapped);
            if (r == SIMAI_OK)
                printf("ok %d\n", swapped);
            else
                printf("err %s %s\n", simai_code_name(r), simai_torch_last_error());
        } else if (sscanf(line, "wait %lf", &t) == 1) {
            int r = simai_surrogate_wait(s, t, &version);
            if (r == SIMAI_OK)
                printf("ok %lld\n", (long long)version);
            else
                printf("err %s %s\n", simai_code_name(r), simai_torch_last_error());
        } else if (sscanf(line, "until %lld %lf", &want, &t) == 2) {
            until(s, want, t);
        } else {
            printf("err unknown command %s", line);
        }
    }
    simai_surrogate_close(s);
    simai_close(store);
    return 0;
}

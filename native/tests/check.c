/* simai_check: the C side of tests/test_native_clients.py. Each command does one thing to a
 * store and prints what it found; the Python test does the other side and compares.
 *
 *   simai_check write URL          put the fixture values under c/ (arrays of every dtype and
 *                                  several shapes, bytes, JSON, a long key, a stream)
 *   simai_check read URL           read the same fixture values Python put under p/
 *   simai_check get URL KEY        get a value (copy and view): prints the code and message
 *   simai_check put URL KEY TEXT   put TEXT as bytes
 *   simai_check wait URL KEY SECS  wait for KEY: prints the code and the seconds waited
 *   simai_check hammer URL ID N    once the key "go" exists, N puts (and deletes, appends) as
 *                                  writer ID, for the concurrency test
 *   simai_check verify URL ID N    check what writer ID left
 *   simai_check open URL           open: prints the code and message
 *   simai_check errors URL         bad calls: each gives the code expected and changes nothing
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "simai.h"

#define FAIL(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), 1)

/* The fixture arrays: tests/_native.py has the same table. */
static const char *const DTYPES[] = {"|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4",
                                     "<u8", "<f2", "<f4", "<f8", "<f16", "<c8", "<c16", "<c32",
                                     ">f8", ">i4"};
static const uint64_t SHAPES[][5] = {
    /* ndim, shape... */
    {0}, {1, 0}, {1, 7}, {2, 3, 4}, {3, 2, 3, 4}, {4, 2, 1, 3, 2}, {2, 100, 50},
};
#define NDTYPES (sizeof DTYPES / sizeof DTYPES[0])
#define NSHAPES (sizeof SHAPES / sizeof SHAPES[0])

static const char *const JSON = "{\"a\": [1, 2.5, \"x\\u00e9\"], \"b\": null, \"c\": true}";

/* The bytes of fixture value `seed` (bool arrays hold 0 and 1 only). */
static void pattern(uint8_t *out, size_t n, unsigned seed, int boolean)
{
    for (size_t j = 0; j < n; j++) {
        uint8_t b = (uint8_t)(j * 131u + seed * 7u + 1u);
        out[j] = boolean ? b & 1 : b;
    }
}

static void array_key(char *out, size_t cap, const char *side, size_t d, size_t s)
{
    snprintf(out, cap, "%s/arr/%s/%zu", side, DTYPES[d], s);
}

static size_t count(const uint64_t *shape)
{
    size_t n = 1;
    for (uint64_t i = 0; i < shape[0]; i++)
        n *= shape[1 + i];
    return n;
}

static int check(int rc, const char *what)
{
    if (rc)
        fprintf(stderr, "%s: %s: %s\n", what, simai_code_name(rc), simai_last_error());
    return rc;
}

static char long_key[400];

static void make_long_key(const char *side)
{
    int n = snprintf(long_key, sizeof long_key, "%s/long/", side);
    memset(long_key + n, 'k', 300);
    long_key[n + 300] = 0;
}

static int write_fixtures(simai_store *s)
{
    uint8_t *buf = malloc(1 << 20);
    char key[64];
    int rc = 0;
    for (size_t d = 0; d < NDTYPES && !rc; d++)
        for (size_t i = 0; i < NSHAPES && !rc; i++) {
            size_t n = count(SHAPES[i]) * simai_dtype_size(DTYPES[d]);
            array_key(key, sizeof key, "c", d, i);
            pattern(buf, n, (unsigned)(d * NSHAPES + i), DTYPES[d][1] == 'b');
            rc = check(simai_put_array(s, key, DTYPES[d], (int)SHAPES[i][0], SHAPES[i] + 1, buf,
                                       0),
                       key);
        }
    pattern(buf, 100000, 1, 0);
    make_long_key("c");
    rc = rc || check(simai_put_bytes(s, "c/bytes", buf, 1000), "bytes") ||
         check(simai_put_bytes(s, "c/bytes-big", buf, 100000), "bytes-big") ||
         check(simai_put_bytes(s, "c/empty", buf, 0), "empty") ||
         check(simai_put_json(s, "c/json", JSON), "json") ||
         check(simai_put_bytes(s, long_key, "long", 4), "long key");
    for (int i = 0; i < 5 && !rc; i++) {
        double v[3] = {i, i + 0.5, -i};
        uint64_t shape[1] = {3};
        int64_t index;
        rc = check(simai_append_array(s, "c/stream", SIMAI_DTYPE_F64, 1, shape, v, 0, 1, &index),
                   "append");
        if (!rc && index != i)
            rc = FAIL("append gave index %" PRId64 ", not %d", index, i);
    }
    rc = rc || check(simai_stream_close(s, "c/stream"), "close stream");
    free(buf);
    return rc;
}

static int read_array(simai_store *s, size_t d, size_t i, uint8_t *want, uint8_t *got)
{
    const uint64_t *shape = SHAPES[i] + 1;
    int ndim = (int)SHAPES[i][0];
    size_t n = count(SHAPES[i]) * simai_dtype_size(DTYPES[d]);
    simai_info info;
    simai_view *view;
    const void *data;
    char key[64];
    array_key(key, sizeof key, "p", d, i);
    pattern(want, n, (unsigned)(d * NSHAPES + i), DTYPES[d][1] == 'b');
    if (check(simai_info_get(s, key, &info), key) ||
        check(simai_get_array(s, key, DTYPES[d], ndim, shape, got, 0), key))
        return 1;
    if (strcmp(info.dtype, DTYPES[d]) || info.ndim != ndim || info.nbytes != n)
        return FAIL("%s: info says %s ndim %d", key, info.dtype, info.ndim);
    if (memcmp(want, got, n))
        return FAIL("%s: the copy differs", key);
    if (check(simai_view_get(s, key, &view, &data, &info), key))
        return 1;
    if (memcmp(want, data, n)) {
        simai_view_release(view);
        return FAIL("%s: the view differs", key);
    }
    simai_view_release(view);
    return 0;
}

static int read_fixtures(simai_store *s)
{
    uint8_t *want = malloc(1 << 20), *got = malloc(1 << 20);
    char text[256];
    size_t n;
    int rc = 0;
    for (size_t d = 0; d < NDTYPES && !rc; d++)
        for (size_t i = 0; i < NSHAPES && !rc; i++)
            rc = read_array(s, d, i, want, got);
    pattern(want, 100000, 1, 0);
    make_long_key("p");
    rc = rc || check(simai_get_bytes(s, "p/bytes-big", got, 1 << 20, &n), "bytes-big") ||
         (n != 100000 || memcmp(want, got, n) ? FAIL("p/bytes-big differs") : 0) ||
         check(simai_get_json(s, "p/json", text, sizeof text, &n), "json") ||
         (strcmp(text, JSON) ? FAIL("p/json is %s", text) : 0) ||
         check(simai_get_bytes(s, long_key, got, 16, &n), "long key") ||
         (n != 4 || memcmp(got, "long", 4) ? FAIL("the long key's value differs") : 0);
    for (int i = 0; i < 5 && !rc; i++) {
        double v[3];
        simai_info info;
        rc = check(simai_stream_get(s, "p/stream", i, 5, v, sizeof v, &info), "stream");
        if (!rc && (v[0] != i || v[1] != i + 0.5 || v[2] != -i || info.shape[0] != 3))
            rc = FAIL("stream entry %d differs", i);
    }
    if (!rc) {
        double v[3];
        int code = simai_stream_get(s, "p/stream", 5, 5, v, sizeof v, NULL);
        if (code != SIMAI_ERR_ENDED)
            rc = FAIL("reading past a closed stream gave %s", simai_code_name(code));
    }
    free(want);
    free(got);
    return rc;
}

/* Print the codes and messages of a copy and a view of KEY. */
static int get(simai_store *s, const char *key)
{
    static uint8_t buf[1 << 22];
    simai_info info;
    simai_view *view;
    const void *data;
    int rc = simai_get(s, key, buf, sizeof buf, &info);
    size_t zeros = 0;
    for (uint64_t i = 0; rc && i < info.nbytes && i < sizeof buf; i++)
        zeros += !buf[i];
    printf("get %s %s\n", simai_code_name(rc), simai_last_error());
    if (rc == SIMAI_ERR_CORRUPT && zeros != info.nbytes)
        printf("damaged data was delivered\n");
    rc = simai_view_get(s, key, &view, &data, &info);
    printf("view %s %s\n", simai_code_name(rc), rc ? simai_last_error() : "");
    simai_view_release(view);
    return 0;
}

/* Each bad call gives its code, and the value stored before is still there, unchanged. */
static int errors(simai_store *s)
{
    static const char bad_utf8[] = {'k', (char)0xC3, 0};
    char long_name[SIMAI_MAX_KEY_BYTES + 2], text[4];
    double v[4] = {1, 2, 3, 4}, got[4];
    uint64_t shape[2] = {2, 2}, other[2] = {4, 1};
    size_t n;
    int rc = check(simai_put_array(s, "e/kept", SIMAI_DTYPE_F64, 2, shape, v, 0), "put") ||
             check(simai_put_bytes(s, "e/bytes", "abcdef", 6), "put bytes") ||
             check(simai_append_bytes(s, "e/closed", "x", 1, 0, NULL), "append") ||
             check(simai_stream_close(s, "e/closed"), "close");
    struct bad_call {
        int code, want;
        const char *what;
    } cases[16];
    int k = 0;
    memset(long_name, 'k', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
#define CASE(call, code) cases[k++] = (struct bad_call){(call), (code), #call}
    CASE(simai_put_bytes(s, "", "x", 1), SIMAI_ERR_INVALID);
    CASE(simai_put_bytes(s, long_name, "x", 1), SIMAI_ERR_INVALID);
    CASE(simai_put_bytes(s, bad_utf8, "x", 1), SIMAI_ERR_INVALID);
    CASE(simai_put_array(s, "e/kept", "<f3", 2, shape, v, 0), SIMAI_ERR_INVALID);
    CASE(simai_put_array(s, "e/kept", SIMAI_DTYPE_F64, 2, shape, NULL, 0), SIMAI_ERR_INVALID);
    CASE(simai_put_json(s, "e/kept", "[1, NaN]"), SIMAI_ERR_INVALID);
    CASE(simai_get_array(s, "e/kept", SIMAI_DTYPE_F64, 2, other, got, 0), SIMAI_ERR_TYPE);
    CASE(simai_get_array(s, "e/kept", SIMAI_DTYPE_F32, 2, shape, got, 0), SIMAI_ERR_TYPE);
    CASE(simai_get_bytes(s, "e/kept", got, sizeof got, &n), SIMAI_ERR_TYPE);
    CASE(simai_get_bytes(s, "e/bytes", text, sizeof text, &n), SIMAI_ERR_TOO_SMALL);
    CASE(simai_get_json(s, "e/bytes", text, sizeof text, &n), SIMAI_ERR_TYPE);
    CASE(simai_get(s, "e/missing", got, sizeof got, NULL), SIMAI_ERR_NOT_FOUND);
    CASE(simai_stream_get(s, "e/closed", 1, 5, got, sizeof got, NULL), SIMAI_ERR_ENDED);
    CASE(simai_append_bytes(s, "e/closed", "x", 1, 0, NULL), SIMAI_ERR_STREAM_CLOSED);
    CASE(simai_put_bytes(NULL, "e/kept", "x", 1), SIMAI_ERR_INVALID);
#undef CASE
    for (int i = 0; i < k && !rc; i++)
        if (cases[i].code != cases[i].want)
            rc = FAIL("%s gave %s, not %s", cases[i].what, simai_code_name(cases[i].code),
                      simai_code_name(cases[i].want));
    rc = rc || check(simai_get_array(s, "e/kept", SIMAI_DTYPE_F64, 2, shape, got, 0), "kept") ||
         (memcmp(v, got, sizeof v) ? FAIL("e/kept changed") : 0);
    return rc;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* --- the concurrency test: writer ID puts, overwrites, deletes and appends ------------------ */

static size_t hammer_size(int i)
{
    static const size_t sizes[] = {16, 3000, 1, 5000}; /* f8 elements: inline and apart */
    return sizes[i % 4];
}

static void hammer_value(double *v, size_t n, int id, int i)
{
    for (size_t j = 0; j < n; j++)
        v[j] = id * 1e6 + i + j * 1e-3;
}

static int hammer(simai_store *s, int id, int n)
{
    double *v = malloc(5000 * sizeof *v);
    char key[64];
    int rc = check(simai_wait(s, "go", 30), "waiting to start");
    for (int i = 0; i < n && !rc; i++) {
        uint64_t shape[1] = {hammer_size(i)};
        int existed;
        hammer_value(v, shape[0], id, i);
        snprintf(key, sizeof key, "w%d/%d", id, i);
        rc = check(simai_put_array(s, key, SIMAI_DTYPE_F64, 1, shape, v, 0), key);
        snprintf(key, sizeof key, "shared/%d", i % 10);
        rc = rc || check(simai_put_array(s, key, SIMAI_DTYPE_F64, 1, shape, v, 0), key);
        if (!rc && i % 7 == 3) {
            snprintf(key, sizeof key, "w%d/%d", id, i - 1);
            rc = check(simai_delete(s, key, &existed), key) ||
                 (!existed ? FAIL("%s did not exist", key) : 0);
        }
        if (!rc && i % 5 == 0)
            rc = check(simai_append_array(s, "shared-stream", SIMAI_DTYPE_F64, 1, shape, v, 0,
                                          10, NULL),
                       "append");
    }
    free(v);
    return rc;
}

static int verify(simai_store *s, int id, int n)
{
    double *v = malloc(5000 * sizeof *v), *got = malloc(5000 * sizeof *got);
    char key[64];
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        uint64_t shape[1] = {hammer_size(i)};
        int exists;
        snprintf(key, sizeof key, "w%d/%d", id, i);
        if (i % 7 == 2 && i + 1 < n) {
            rc = check(simai_exists(s, key, &exists), key) ||
                 (exists ? FAIL("%s was deleted but exists", key) : 0);
            continue;
        }
        hammer_value(v, shape[0], id, i);
        rc = check(simai_get_array(s, key, SIMAI_DTYPE_F64, 1, shape, got, 0), key) ||
             (memcmp(v, got, shape[0] * sizeof *v) ? FAIL("%s differs", key) : 0);
    }
    free(v);
    free(got);
    return rc;
}

int main(int argc, char **argv)
{
    simai_store *s;
    int rc;
    if (argc < 3)
        return FAIL("usage: simai_check COMMAND URL ...");
    rc = simai_open_url(argv[2], &s);
    if (!strcmp(argv[1], "open")) {
        printf("%s %s\n", simai_code_name(rc), rc ? simai_last_error() : "");
        simai_close(s);
        return 0;
    }
    if (check(rc, "open"))
        return 1;
    if (!strcmp(argv[1], "write"))
        rc = write_fixtures(s);
    else if (!strcmp(argv[1], "read"))
        rc = read_fixtures(s);
    else if (!strcmp(argv[1], "get") && argc == 4)
        rc = get(s, argv[3]);
    else if (!strcmp(argv[1], "put") && argc == 5)
        rc = check(simai_put_bytes(s, argv[3], argv[4], strlen(argv[4])), "put");
    else if (!strcmp(argv[1], "wait") && argc == 5) {
        double start = now();
        rc = simai_wait(s, argv[3], atof(argv[4]));
        printf("%s %.3f %s\n", simai_code_name(rc), now() - start, rc ? simai_last_error() : "");
        rc = 0;
    } else if (!strcmp(argv[1], "hammer") && argc == 5)
        rc = hammer(s, atoi(argv[3]), atoi(argv[4]));
    else if (!strcmp(argv[1], "errors"))
        rc = errors(s);
    else if (!strcmp(argv[1], "verify") && argc == 5)
        rc = verify(s, atoi(argv[3]), atoi(argv[4]));
    else
        rc = FAIL("unknown command or wrong arguments: %s", argv[1]);
    simai_close(s);
    if (!rc)
        printf("ok\n");
    return rc;
}

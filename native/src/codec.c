/* Encoding, parsing and verifying entries; dtypes. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "error.h"
#include "hash.h"
#include "hashthread.h"

#define ALIGN 64
#define VERSION 2
/* payloads at least this large are hashed on a second core, by the helper thread
 * (hashthread.c), while this one copies them; below it, or when the helper is busy, copy and
 * hash go step by step on this core (simai_xxh3_copy). Puts this large stream past the cache
 * (copy.h). */
#define PARALLEL_MIN ((size_t)256 << 10)

static const uint8_t MAGIC[4] = {'S', 'M', 'A', 'I'};

size_t simai_header_size(int ndim)
{
    size_t raw = SIMAI_FIXED + 8 * (size_t)ndim + 8;
    return (raw + ALIGN - 1) / ALIGN * ALIGN;
}

/* --- dtypes: the numpy type strings of numeric and bool arrays, in their canonical form ---- */

size_t simai_dtype_size(const char *dtype)
{
    char order, kind, *end;
    long size;
    if (!dtype || strlen(dtype) < 3 || strlen(dtype) > 4)
        return 0;
    order = dtype[0];
    kind = dtype[1];
    if (dtype[2] < '1' || dtype[2] > '9')
        return 0;
    size = strtol(dtype + 2, &end, 10);
    if (*end)
        return 0;
    if (order != (size == 1 ? '|' : '<') && !(size > 1 && order == '>'))
        return 0; /* numpy writes "|" for one byte, "<" or ">" otherwise */
    switch (kind) {
    case 'b':
        return size == 1 ? 1 : 0;
    case 'i':
    case 'u':
        return (size == 1 || size == 2 || size == 4 || size == 8) ? (size_t)size : 0;
    case 'f':
        return (size == 2 || size == 4 || size == 8 || size == 12 || size == 16) ? (size_t)size
                                                                                 : 0;
    case 'c':
        return (size == 8 || size == 16 || size == 24 || size == 32) ? (size_t)size : 0;
    default:
        return 0;
    }
}

/* --- building headers ---------------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

/* The header bytes the seed covers. */
static void head_body(const struct simai_head *h, uint8_t *out)
{
    memcpy(out, MAGIC, 4);
    out[4] = VERSION;
    out[5] = (uint8_t)h->kind;
    out[6] = (uint8_t)h->ndim;
    out[7] = 0;
    memset(out + 8, 0, 8);
    memcpy(out + 8, h->dtype, strlen(h->dtype));
    put_u64(out + 16, h->nbytes);
    for (int i = 0; i < h->ndim; i++)
        put_u64(out + SIMAI_FIXED + 8 * i, h->shape[i]);
}

static void head_seal(struct simai_head *h)
{
    uint8_t body[SIMAI_MAX_HEADER];
    size_t end = SIMAI_FIXED + 8 * (size_t)h->ndim;
    head_body(h, body);
    h->seed = simai_xxh3(body, end, 0);
    h->offset = simai_header_size(h->ndim);
}

int simai_head_array(struct simai_head *h, const char *dtype, int ndim, const uint64_t *shape)
{
    uint64_t n;
    memset(h, 0, sizeof *h);
    h->itemsize = simai_dtype_size(dtype);
    if (!h->itemsize)
        return simai_fail(SIMAI_ERR_INVALID,
                          "dtype %s%s%s is not a numpy type string of a numeric or bool type "
                          "(\"<f8\", \"<i4\", \"|u1\", \"|b1\", \"<c16\" ...)",
                          dtype ? "\"" : "", dtype ? dtype : "NULL", dtype ? "\"" : "");
    if (ndim < 0 || ndim > SIMAI_MAX_NDIM)
        return simai_fail(SIMAI_ERR_INVALID, "ndim is %d; arrays have 0 to %d dimensions", ndim,
                          SIMAI_MAX_NDIM);
    if (ndim && !shape)
        return simai_fail(SIMAI_ERR_INVALID, "shape is NULL for an array of %d dimensions", ndim);
    n = h->itemsize;
    for (int i = 0; i < ndim; i++) {
        if (__builtin_mul_overflow(n, shape[i], &n) || n > (uint64_t)PTRDIFF_MAX)
            return simai_fail(SIMAI_ERR_INVALID, "the array's shape is too large to store");
        h->shape[i] = shape[i];
    }
    h->kind = SIMAI_KIND_ARRAY;
    h->ndim = ndim;
    strcpy(h->dtype, dtype);
    h->nbytes = n;
    head_seal(h);
    return SIMAI_OK;
}

void simai_head_plain(struct simai_head *h, int kind, uint64_t nbytes)
{
    memset(h, 0, sizeof *h);
    h->kind = kind;
    h->nbytes = nbytes;
    head_seal(h);
}

void simai_head_write(const struct simai_head *h, uint8_t *out)
{
    size_t end = SIMAI_FIXED + 8 * (size_t)h->ndim;
    head_body(h, out);
    put_u64(out + end, h->checksum);
    memset(out + end + 8, 0, h->offset - end - 8);
}

/* --- parsing headers ----------------------------------------------------------------------- */

int simai_head_parse(struct simai_head *h, const uint8_t *entry, size_t n)
{
    size_t end, len;
    uint64_t size;
    memset(h, 0, sizeof *h);
    if (n < SIMAI_FIXED + 8)
        return simai_fail(SIMAI_ERR_CORRUPT,
                          "entry is truncated: %zu bytes, shorter than a header", n);
    end = SIMAI_FIXED + 8 * (size_t)entry[6];
    if (n < end + 8)
        return simai_fail(SIMAI_ERR_CORRUPT, "entry is truncated inside its header");
    if (memcmp(entry, MAGIC, 4))
        return simai_fail(SIMAI_ERR_CORRUPT, "entry does not start with the simai magic bytes");
    if (entry[4] != VERSION)
        return simai_fail(SIMAI_ERR_CORRUPT,
                          "entry has format version %d, this simai reads version %d", entry[4],
                          VERSION);
    h->kind = entry[5];
    h->ndim = entry[6];
    if (h->ndim > SIMAI_MAX_NDIM || h->kind > SIMAI_KIND_PICKLE)
        return simai_fail(SIMAI_ERR_CORRUPT, "entry header is damaged");
    memcpy(h->dtype, entry + 8, 8);
    for (len = 8; len && !h->dtype[len - 1]; len--)
        ;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)h->dtype[i] > 0x7F)
            return simai_fail(SIMAI_ERR_CORRUPT, "entry header is damaged");
    h->nbytes = get_u64(entry + 16);
    for (int i = 0; i < h->ndim; i++)
        h->shape[i] = get_u64(entry + SIMAI_FIXED + 8 * i);
    if (h->kind == SIMAI_KIND_ARRAY) {
        if (memchr(h->dtype, 0, len) || !(h->itemsize = simai_dtype_size(h->dtype)))
            return simai_fail(SIMAI_ERR_CORRUPT, "entry has an unknown dtype '%.8s'", h->dtype);
        size = h->itemsize;
        for (int i = 0; i < h->ndim; i++)
            if (__builtin_mul_overflow(size, h->shape[i], &size))
                size = UINT64_MAX;
        if (size != h->nbytes)
            return simai_fail(SIMAI_ERR_CORRUPT,
                              "entry payload length does not match its dtype and shape");
    } else if (len || h->ndim)
        return simai_fail(SIMAI_ERR_CORRUPT, "entry header is damaged");
    h->seed = simai_xxh3(entry, end, 0);
    h->checksum = get_u64(entry + end);
    h->offset = simai_header_size(h->ndim);
    return SIMAI_OK;
}

void simai_head_info(const struct simai_head *h, simai_info *info)
{
    memset(info, 0, sizeof *info);
    info->kind = h->kind;
    info->ndim = h->ndim;
    memcpy(info->dtype, h->dtype, sizeof info->dtype);
    info->nbytes = h->nbytes;
    memcpy(info->shape, h->shape, sizeof h->shape);
}

/* --- checksums ----------------------------------------------------------------------------- */

static int mismatch(void)
{
    return simai_fail(SIMAI_ERR_CORRUPT,
                      "entry fails its checksum: it was altered after it was written");
}

uint64_t simai_hash(const void *p, size_t n, uint64_t seed)
{
    return simai_xxh3(p, n, seed);
}

int simai_verify(const struct simai_head *h, const void *payload)
{
    return simai_hash(payload, h->nbytes, h->seed) == h->checksum ? SIMAI_OK : mismatch();
}

uint64_t simai_copy_hashed(void *dst, const void *src, size_t n, uint64_t seed, int put)
{
    int streaming = put && n >= PARALLEL_MIN;
    if (n >= PARALLEL_MIN && simai_helper_begin(src, n, seed)) {
        if (streaming) /* while the helper hashes the source on another core */
            simai_copy_streaming(dst, src, n);
        else
            memcpy(dst, src, n);
        return simai_helper_end();
    }
    return simai_xxh3_copy(dst, src, n, seed, streaming);
}

/* --- row-major <-> column-major ------------------------------------------------------------ */

void simai_transpose(void *c, void *f, int ndim, const uint64_t *shape, size_t itemsize,
                     int to_c)
{
    uint64_t idx[SIMAI_MAX_NDIM] = {0}, stride[SIMAI_MAX_NDIM], total = 1, inner, step;
    char *cp = c, *fp = f;
    size_t foff = 0;
    for (int k = 0; k < ndim; k++) {
        stride[k] = total; /* column-major: axis 0 is contiguous */
        total *= shape[k];
    }
    if (ndim < 2 || total == 0) {
        if (to_c)
            memcpy(c, f, total * itemsize);
        else
            memcpy(f, c, total * itemsize);
        return;
    }
    inner = shape[ndim - 1];
    step = stride[ndim - 1] * itemsize;
    for (uint64_t done = 0; done < total; done += inner) {
        char *row = cp + done * itemsize, *col = fp + foff * itemsize;
        for (uint64_t i = 0; i < inner; i++, row += itemsize, col += step) {
            if (to_c)
                memcpy(row, col, itemsize);
            else
                memcpy(col, row, itemsize);
        }
        for (int k = ndim - 2; k >= 0; k--) { /* the next row: carry through the axes */
            foff += stride[k];
            if (++idx[k] < shape[k])
                break;
            foff -= shape[k] * stride[k];
            idx[k] = 0;
        }
    }
}

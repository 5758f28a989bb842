/* The wire format of a stored value (simai/store/codec.py): a header, then the payload.
 *
 *   offset     size      field (integers little-endian)
 *   0          4         magic "SMAI"
 *   4          1         format version (2)
 *   5          1         kind: 0 bytes, 1 array, 2 JSON, 3 pickle
 *   6          1         ndim (0..32)
 *   7          1         reserved, 0
 *   8          8         dtype: numpy type string, ASCII, NUL-padded
 *   16         8         payload length
 *   24         8*ndim    shape, C order
 *   24+8*ndim  8         XXH3-64 of the payload, seeded with the XXH3-64 of the bytes above
 *   ...                  zero padding to a multiple of 64 bytes, then the payload
 */
#ifndef SIMAI_CODEC_H
#define SIMAI_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "simai.h"

#define SIMAI_FIXED 24 /* header bytes before the shape */
#define SIMAI_MAX_HEADER 320 /* simai_header_size(SIMAI_MAX_NDIM) */

/* A header's fields; one that parsed describes a payload it can decode. */
struct simai_head {
    int kind;
    int ndim;
    char dtype[16];
    uint64_t shape[SIMAI_MAX_NDIM];
    uint64_t nbytes;   /* the payload's length */
    size_t offset;     /* the header's length: where the payload starts */
    size_t itemsize;   /* of an array's elements; 0 for other kinds */
    uint64_t seed;     /* XXH3-64 of the header bytes before the checksum */
    uint64_t checksum; /* what the header holds */
};

size_t simai_header_size(int ndim);

/* A header for an array (SIMAI_ERR_INVALID saying what is wrong with dtype or shape), or for
 * bytes, JSON or pickle; the seed is computed, the checksum left to the caller. */
int simai_head_array(struct simai_head *h, const char *dtype, int ndim, const uint64_t *shape);
void simai_head_plain(struct simai_head *h, int kind, uint64_t nbytes);

/* Write h->offset header bytes, with h->checksum, to `out`. */
void simai_head_write(const struct simai_head *h, uint8_t *out);

/* Parse the header at the start of an entry of `n` bytes; SIMAI_ERR_CORRUPT saying what is
 * wrong with it, as codec.parse_header says it. */
int simai_head_parse(struct simai_head *h, const uint8_t *entry, size_t n);

void simai_head_info(const struct simai_head *h, simai_info *info);

/* SIMAI_ERR_CORRUPT unless the payload's XXH3-64 (seeded) is the header's checksum. */
int simai_verify(const struct simai_head *h, const void *payload);

uint64_t simai_hash(const void *p, size_t n, uint64_t seed);

/* Copy n bytes and return the XXH3-64 (seeded) of them: a large payload is hashed by the
 * helper thread (hashthread.h) on another core while this one copies it; otherwise, or when
 * the helper is busy, each chunk is hashed while it is still in the cache from its copy. So
 * verifying costs little beside the copy. A large put (the copy into the store) streams past
 * this core's cache (copy.h); a get's copy stays cached for the caller who reads it next. */
uint64_t simai_copy_hashed(void *dst, const void *src, size_t n, uint64_t seed, int put);

/* Copy an array of `shape` between its row-major form `c` and its column-major form `f`:
 * into `c` when to_c, else into `f`. */
void simai_transpose(void *c, void *f, int ndim, const uint64_t *shape, size_t itemsize,
                     int to_c);

#endif

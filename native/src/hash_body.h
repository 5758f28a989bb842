/* The hash functions of hash.h for one instruction set: included by hash.c (the compiler's
 * default, SSE2 on x86-64) and hash_avx2.c (built with -mavx2), each defining
 * SIMAI_HASH_SUFFIX first. XXH3's value does not depend on the vector unit that computes it. */
#include <string.h>

#include "copy.h"
#include "hash.h"

#define XXH_INLINE_ALL
#include "xxhash.h"

#define SIMAI_HASH_CAT2(a, b) a##b
#define SIMAI_HASH_CAT(a, b) SIMAI_HASH_CAT2(a, b)
#define SIMAI_HASH_NAME(name) SIMAI_HASH_CAT(name, SIMAI_HASH_SUFFIX)

/* the copy's step, in XXH3's 1 KiB blocks: long enough for memcpy to stream, short enough
 * that the step is still in L1 when it is hashed */
#define SIMAI_HASH_STEP 16

uint64_t SIMAI_HASH_NAME(simai_xxh3_)(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

/* XXH3's long-input loop (XXH3_hashLong_64b_withSeed in xxhash.h), each block copied first
 * and hashed while it is in L1: from the copy, or when streaming (copy.h), from the source. */
uint64_t SIMAI_HASH_NAME(simai_xxh3_copy_)(void *dst, const void *src, size_t n, uint64_t seed,
                                           int streaming)
{
    enum { SECRET = XXH_SECRET_DEFAULT_SIZE, STRIPES = (SECRET - XXH_STRIPE_LEN) / 8 };
    enum { BLOCK = XXH_STRIPE_LEN * STRIPES };
    XXH_ALIGN(XXH_SEC_ALIGN) xxh_u8 secret[SECRET];
    XXH_ALIGN(XXH_ACC_ALIGN) xxh_u64 acc[XXH_ACC_NB] = XXH3_INIT_ACC;
    xxh_u8 *d = dst;
    const xxh_u8 *s = src, *h = streaming ? s : d;
    size_t blocks, at = 0;
    if (n <= XXH3_MIDSIZE_MAX) {
        memcpy(dst, src, n);
        return XXH3_64bits_withSeed(dst, n, seed);
    }
    XXH3_initCustomSecret(secret, seed); /* seed 0 gives the default secret */
    blocks = (n - 1) / BLOCK;
    for (size_t b = 0; b < blocks;) {
        size_t k = blocks - b < SIMAI_HASH_STEP ? blocks - b : SIMAI_HASH_STEP;
        if (streaming)
            simai_copy_streaming(d + at, s + at, k * BLOCK);
        else
            memcpy(d + at, s + at, k * BLOCK);
        for (size_t end = b + k; b < end; b++, at += BLOCK) {
            XXH3_accumulate(acc, h + at, secret, STRIPES);
            XXH3_scrambleAcc(acc, secret + SECRET - XXH_STRIPE_LEN);
        }
    }
    memcpy(d + at, s + at, n - at); /* the last, partial block, then the last stripe */
    XXH3_accumulate(acc, h + at, secret, (n - 1 - at) / XXH_STRIPE_LEN);
    XXH3_accumulate_512(acc, h + n - XXH_STRIPE_LEN,
                        secret + SECRET - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
    return XXH3_mergeAccs(acc, secret + XXH_SECRET_MERGEACCS_START, (xxh_u64)n * XXH_PRIME64_1);
}

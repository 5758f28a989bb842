/* XXH3-64, the checksum of the wire format, with the widest vector unit the CPU has. */
#ifndef SIMAI_HASH_H
#define SIMAI_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The seeded XXH3-64 of n bytes. */
uint64_t simai_xxh3(const void *p, size_t n, uint64_t seed);

/* Copy n bytes and return their seeded XXH3-64: chunk by chunk, each chunk hashed right after
 * its copy, while it is still in the cache; streaming: copied past the cache (copy.h). */
uint64_t simai_xxh3_copy(void *dst, const void *src, size_t n, uint64_t seed, int streaming);

/* The same, built for one instruction set each (hash_body.h); hash.c picks one at run time. */
uint64_t simai_xxh3_generic(const void *p, size_t n, uint64_t seed);
uint64_t simai_xxh3_copy_generic(void *dst, const void *src, size_t n, uint64_t seed,
                                 int streaming);
uint64_t simai_xxh3_avx2(const void *p, size_t n, uint64_t seed);
uint64_t simai_xxh3_copy_avx2(void *dst, const void *src, size_t n, uint64_t seed,
                              int streaming);

#endif

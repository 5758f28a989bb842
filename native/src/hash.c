/* XXH3 with the compiler's default instruction set, and the choice, once per process, of the
 * widest one the CPU has. */
#define SIMAI_HASH_SUFFIX generic
#include "hash_body.h"

#include <pthread.h>

typedef uint64_t (*hash_fn)(const void *, size_t, uint64_t);
typedef uint64_t (*copy_fn)(void *, const void *, size_t, uint64_t, int);

static hash_fn hash_impl = simai_xxh3_generic;
static copy_fn copy_impl = simai_xxh3_copy_generic;
static pthread_once_t chosen = PTHREAD_ONCE_INIT;

static void choose(void)
{
#ifdef SIMAI_HASH_AVX2 /* hash_avx2.c is built: x86-64 and a compiler that takes -mavx2 */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) { /* the CPU has it and the OS saves its registers */
        hash_impl = simai_xxh3_avx2;
        copy_impl = simai_xxh3_copy_avx2;
    }
#endif
}

uint64_t simai_xxh3(const void *p, size_t n, uint64_t seed)
{
    pthread_once(&chosen, choose);
    return hash_impl(p, n, seed);
}

uint64_t simai_xxh3_copy(void *dst, const void *src, size_t n, uint64_t seed, int streaming)
{
    pthread_once(&chosen, choose);
    return copy_impl(dst, src, n, seed, streaming);
}

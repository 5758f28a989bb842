/* XXH3 with AVX2; built with -mavx2 where the compiler takes it, called only on CPUs that
 * have AVX2 (hash.c). */
#define XXH_VECTOR XXH_AVX2
#define SIMAI_HASH_SUFFIX avx2
#include "hash_body.h"

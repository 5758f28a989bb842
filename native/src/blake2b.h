/* BLAKE2b (RFC 7693), unkeyed: the hash the Python client names long keys with. */
#ifndef SIMAI_BLAKE2B_H
#define SIMAI_BLAKE2B_H

#include <stddef.h>
#include <stdint.h>

/* out[0..outlen) = BLAKE2b-(8*outlen) of in[0..n), 1 <= outlen <= 64 (hashlib.blake2b with
 * digest_size=outlen). */
void simai_blake2b(uint8_t *out, size_t outlen, const void *in, size_t n);

#endif

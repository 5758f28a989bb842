/* The checksum helper thread (hashthread.c): hashes a payload on another core while the
 * calling thread copies it. */
#ifndef SIMAI_HASHTHREAD_H
#define SIMAI_HASHTHREAD_H

#include <stddef.h>
#include <stdint.h>

/* Hand the seeded XXH3-64 of p[0..n) to the helper: 1 when it took the job (then call
 * simai_helper_end from this thread, and keep p[0..n) unchanged until then), 0 when it
 * cannot (another thread's job is running, it could not start, or the process has one CPU):
 * hash on this thread then. Starts the helper on the first call. */
int simai_helper_begin(const void *p, size_t n, uint64_t seed);

/* Wait for the job begun by this thread and return its hash; the helper is free again. */
uint64_t simai_helper_end(void);

#endif

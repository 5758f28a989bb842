/* A copy that bypasses this core's caches (non-temporal stores), for payloads written into the
 * node-local store: another process reads them later, so caching them here would only evict
 * the caller's own data, and a cached store first reads each destination line it writes. */
#ifndef SIMAI_COPY_H
#define SIMAI_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h> /* SSE2: every x86-64 CPU has it */

static inline void simai_copy_streaming(void *dst, const void *src, size_t n)
{
    char *d = dst;
    const char *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15; /* the streaming stores need 16-byte lines */
    if (n < 64 + head) {
        memcpy(d, s, n);
        return;
    }
    memcpy(d, s, head);
    d += head, s += head, n -= head;
    for (; n >= 64; d += 64, s += 64, n -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, n);
    _mm_sfence(); /* the streamed lines are ordered before whatever this thread stores next */
}
#else
static inline void simai_copy_streaming(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}
#endif

#endif

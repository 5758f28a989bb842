/* Error reporting: a code returned, a message kept per thread for simai_last_error(). */
#ifndef SIMAI_ERROR_H
#define SIMAI_ERROR_H

#include "simai.h"

#if defined(__GNUC__) || defined(__clang__)
#define SIMAI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SIMAI_PRINTF(a, b)
#endif

/* Record `code` and the formatted message for this thread; returns `code`. */
int simai_fail(int code, const char *fmt, ...) SIMAI_PRINTF(2, 3);

/* Prefix this thread's message with the formatted text (context added on the way out). */
void simai_error_context(const char *fmt, ...) SIMAI_PRINTF(1, 2);

#endif

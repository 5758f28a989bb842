/* Checks of the text callers hand in: keys and JSON, as the Python client checks them. */
#ifndef SIMAI_TEXT_H
#define SIMAI_TEXT_H

#include <stddef.h>

/* Whether s[0..n) is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF);
 * else *bad is the offset of the first byte that is not. */
int simai_utf8_valid(const char *s, size_t n, size_t *bad);

/* SIMAI_OK, or SIMAI_ERR_INVALID saying why `key` is not a valid store key: non-empty UTF-8
 * of at most SIMAI_MAX_KEY_BYTES bytes. `what` names it in the message ("key", "stream
 * name"). *n is its length. */
int simai_check_key(const char *key, const char *what, size_t *n);

/* SIMAI_OK, or SIMAI_ERR_INVALID saying where `text` (n bytes) stops being JSON (RFC 8259,
 * UTF-8; NaN and Infinity are refused, as Python's client refuses to store them). */
int simai_check_json(const char *text, size_t n);

#endif

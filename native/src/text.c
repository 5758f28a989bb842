/* UTF-8, key and JSON checks. */
#include "text.h"

#include <string.h>

#include "error.h"

int simai_utf8_valid(const char *s, size_t n, size_t *bad)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else
            goto invalid;
        if (i + len > n || p[i + 1] < lo || p[i + 1] > hi)
            goto invalid;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                goto invalid;
        i += len;
    }
    return 1;
invalid:
    if (bad)
        *bad = i;
    return 0;
}

int simai_check_key(const char *key, const char *what, size_t *n)
{
    size_t bad;
    if (!key)
        return simai_fail(SIMAI_ERR_INVALID, "%s must not be NULL", what);
    *n = strlen(key);
    if (!*n)
        return simai_fail(SIMAI_ERR_INVALID, "%s must not be empty", what);
    if (*n > SIMAI_MAX_KEY_BYTES)
        return simai_fail(SIMAI_ERR_INVALID, "%s is %zu bytes long; the limit is %d bytes of UTF-8",
                          what, *n, SIMAI_MAX_KEY_BYTES);
    if (!simai_utf8_valid(key, *n, &bad))
        return simai_fail(SIMAI_ERR_INVALID, "%s is not valid UTF-8 (at byte %zu)", what, bad);
    return SIMAI_OK;
}

/* --- JSON: a recursive-descent recognizer -------------------------------------------------- */

#define JSON_DEPTH_MAX 500

struct json {
    const char *p, *end;
    const char *why;
};

static void json_ws(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int json_digits(struct json *j)
{
    const char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > start;
}

static int json_number(struct json *j)
{
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (!json_digits(j))
        return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!json_digits(j))
            return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!json_digits(j))
            return 0;
    }
    return 1;
}

static int json_hex4(struct json *j)
{
    for (int k = 0; k < 4; k++, j->p++)
        if (j->p >= j->end || !*j->p || !strchr("0123456789abcdefABCDEF", *j->p))
            return 0;
    return 1;
}

static int json_string(struct json *j)
{
    j->p++; /* the opening quote */
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            return 1;
        }
        if (c < 0x20) {
            j->why = "a control character inside a string";
            return 0;
        }
        if (c != '\\') {
            j->p++;
            continue;
        }
        j->p++;
        if (j->p >= j->end)
            break;
        if (*j->p == 'u') {
            j->p++;
            if (!json_hex4(j)) {
                j->why = "a bad \\u escape";
                return 0;
            }
        } else if (*j->p && strchr("\"\\/bfnrt", *j->p))
            j->p++;
        else {
            j->why = "a bad escape";
            return 0;
        }
    }
    j->why = "an unterminated string";
    return 0;
}

static int json_word(struct json *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n))
        return 0;
    j->p += n;
    return 1;
}

static int json_value(struct json *j, int depth)
{
    json_ws(j);
    if (j->p >= j->end) {
        j->why = "the end of the text where a value was expected";
        return 0;
    }
    if (depth > JSON_DEPTH_MAX) {
        j->why = "nesting deeper than 500 levels";
        return 0;
    }
    switch (*j->p) {
    case '{':
    case '[': {
        char close = *j->p == '{' ? '}' : ']';
        int object = close == '}';
        j->p++;
        json_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 1;
        }
        for (;;) {
            if (object) {
                json_ws(j);
                if (j->p >= j->end || *j->p != '"') {
                    j->why = "an object key that is not a string";
                    return 0;
                }
                if (!json_string(j))
                    return 0;
                json_ws(j);
                if (j->p >= j->end || *j->p != ':') {
                    j->why = "a missing ':' after an object key";
                    return 0;
                }
                j->p++;
            }
            if (!json_value(j, depth + 1))
                return 0;
            json_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                return 1;
            }
            j->why = object ? "a missing ',' or '}'" : "a missing ',' or ']'";
            return 0;
        }
    }
    case '"':
        return json_string(j);
    case 't':
        return json_word(j, "true");
    case 'f':
        return json_word(j, "false");
    case 'n':
        return json_word(j, "null");
    default:
        return json_number(j);
    }
}

int simai_check_json(const char *text, size_t n)
{
    struct json j = {text, text + n, NULL};
    size_t bad;
    if (!simai_utf8_valid(text, n, &bad))
        return simai_fail(SIMAI_ERR_INVALID, "JSON text is not valid UTF-8 (at byte %zu)", bad);
    if (json_value(&j, 0)) {
        json_ws(&j);
        if (j.p == j.end)
            return SIMAI_OK;
        j.why = "more text after the value";
    }
    if (!j.why)
        j.why = (j.p < j.end && (*j.p == 'N' || *j.p == 'I' || *j.p == '-'))
                    ? "NaN or Infinity, which have no JSON form (store them in an array)"
                    : "an unexpected character";
    return simai_fail(SIMAI_ERR_INVALID, "not JSON: %s at byte %zu", j.why,
                      (size_t)(j.p - text));
}

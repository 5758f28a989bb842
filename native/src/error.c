/* Error codes and this thread's last message. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MESSAGE_MAX 1024

static _Thread_local char message[MESSAGE_MAX];

int simai_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return code;
}

void simai_error_context(const char *fmt, ...)
{
    char old[MESSAGE_MAX];
    size_t n;
    va_list ap;
    memcpy(old, message, sizeof old);
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    n = strlen(message);
    snprintf(message + n, sizeof message - n, "%s", old);
}

const char *simai_last_error(void)
{
    return message;
}

const char *simai_code_name(int code)
{
    static const char *const names[] = {
        "SIMAI_OK",         "SIMAI_ERR_INVALID",    "SIMAI_ERR_NOT_FOUND",
        "SIMAI_ERR_TIMEOUT", "SIMAI_ERR_CORRUPT",   "SIMAI_ERR_TYPE",
        "SIMAI_ERR_TOO_SMALL", "SIMAI_ERR_PERMISSION", "SIMAI_ERR_FULL",
        "SIMAI_ERR_CLOSED", "SIMAI_ERR_IO",         "SIMAI_ERR_NOMEM",
        "SIMAI_ERR_ENDED",  "SIMAI_ERR_TRIMMED",    "SIMAI_ERR_UNSUPPORTED",
        "SIMAI_ERR_STREAM_CLOSED",
    };
    if (code < 0 || (size_t)code >= sizeof names / sizeof names[0])
        return "SIMAI_ERR_?";
    return names[code];
}

/* This thread's last error message in libsimai_torch. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MESSAGE_MAX 1024

static _Thread_local char message[MESSAGE_MAX];

int simai_torch_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return code;
}

int simai_torch_fail_simai(int code, const char *fmt, ...)
{
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    n = strlen(message);
    snprintf(message + n, sizeof message - n, ": %s", simai_last_error());
    return code;
}

const char *simai_torch_last_error(void)
{
    return message;
}

/* Helpers of the backends that move whole entries (file, redis): sealing a payload before it
 * is sent, delivering an entry that was read whole, and polling with a backoff. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "error.h"
#include "internal.h"

#define MAX_PAUSE 0.05

int simai_seal(struct simai_head *h, const struct simai_src *src, const void **payload,
               void **tmp)
{
    *tmp = NULL;
    *payload = src->data;
    if (src->colmajor && h->kind == SIMAI_KIND_ARRAY && h->nbytes) {
        if (!(*tmp = malloc(h->nbytes)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory transposing an array");
        simai_transpose(*tmp, (void *)src->data, h->ndim, h->shape, h->itemsize, 1);
        *payload = *tmp;
    }
    h->checksum = simai_hash(*payload, h->nbytes, h->seed);
    return SIMAI_OK;
}

int simai_deliver_whole(uint8_t *buf, size_t len, const struct simai_want *w, simai_view **view,
                        const void **data, const char *what)
{
    struct simai_head h;
    int rc = simai_head_parse(&h, buf, len);
    if (!rc && !w->head_only && len != h.offset + h.nbytes)
        rc = simai_fail(SIMAI_ERR_CORRUPT,
                        "entry is truncated: its header announces %llu payload bytes, found "
                        "%zu",
                        (unsigned long long)h.nbytes, len > h.offset ? len - h.offset : 0);
    if (!rc)
        rc = simai_deliver(&h, buf + h.offset, w);
    if (rc && rc != SIMAI_ERR_TOO_SMALL)
        simai_error_context("%s: ", what);
    if (!rc && w->view) {
        if (!(*view = calloc(1, sizeof **view)))
            rc = simai_fail(SIMAI_ERR_NOMEM, "out of memory");
        else {
            (*view)->owned = buf;
            *data = buf + h.offset;
            return SIMAI_OK;
        }
    }
    free(buf);
    return rc;
}

int simai_backoff(double *pause, double deadline)
{
    double wait = *pause;
    struct timespec ts;
    if (deadline >= 0) {
        double left = deadline - simai_now();
        if (left <= 0)
            return SIMAI_ERR_TIMEOUT;
        if (left < wait)
            wait = left;
    }
    ts.tv_sec = (time_t)wait;
    ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
    *pause = *pause * 2 < MAX_PAUSE ? *pause * 2 : MAX_PAUSE;
    return SIMAI_OK;
}

int simai_poll(int (*check)(void *), void *arg, double deadline)
{
    double pause = SIMAI_FIRST_PAUSE;
    int rc;
    while ((rc = check(arg)) == SIMAI_WAIT_AGAIN)
        if ((rc = simai_backoff(&pause, deadline)))
            return rc;
    return rc;
}

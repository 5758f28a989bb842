/* Writing, deleting, finding and delivering entries. */
#include "entry.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <sys/mman.h>

#include "blake2b.h"
#include "error.h"

static const char *const KIND_NAMES[] = {"bytes", "an array", "JSON", "a pickle"};

void simai_lkey_name(struct simai_lkey *k, char tag, const char *name, size_t n)
{
    k->b[0] = (uint8_t)tag;
    if (n <= SIMAI_NAME_MAX) {
        memcpy(k->b + 1, name, n);
        k->n = 1 + n;
    } else {
        k->b[1] = SIMAI_HASHED;
        simai_blake2b(k->b + 2, 20, name, n);
        k->n = 2 + 20;
    }
}

void simai_lkey_entry(struct simai_lkey *k, const char *stream, size_t n, int64_t index)
{
    simai_lkey_name(k, 'e', stream, n);
    k->b[k->n++] = 0;
    for (int i = 7; i >= 0; i--)
        k->b[k->n++] = (uint8_t)((uint64_t)index >> (8 * i));
}

/* Whether a record is a header alone whose payload lives in `payloads` (local.py _split). */
static int split(const MDB_val *record)
{
    const uint8_t *p = record->mv_data;
    uint64_t nbytes = 0;
    if (record->mv_size < SIMAI_FIXED || record->mv_size > SIMAI_MAX_HEADER)
        return 0;
    for (int i = 7; i >= 0; i--)
        nbytes = (nbytes << 8) | p[16 + i];
    return nbytes > SIMAI_INLINE_MAX;
}

/* Copy the payload into `dst`, row-major, and seal its checksum into `h`. */
static void fill(uint8_t *dst, struct simai_head *h, const struct simai_src *src)
{
    if (src->colmajor) {
        simai_transpose(dst, (void *)src->data, h->ndim, h->shape, h->itemsize, 1);
        h->checksum = simai_hash(dst, h->nbytes, h->seed);
    } else
        h->checksum = simai_copy_hashed(dst, src->data, h->nbytes, h->seed, 1);
}

int simai_put_entry(MDB_txn *txn, struct simai_env *e, const struct simai_lkey *k,
                    struct simai_head *h, const struct simai_src *src, const char *url)
{
    MDB_val key = {k->n, (void *)k->b}, val, old;
    int rc;
    if (h->nbytes <= SIMAI_INLINE_MAX) { /* one record: header and payload */
        if (!mdb_get(txn, e->values, &key, &old) && split(&old) &&
            (rc = mdb_del(txn, e->payloads, &key, NULL)) && rc != MDB_NOTFOUND)
            return simai_lmdb_fail(rc, url, "deleting the old payload");
        val.mv_size = h->offset + h->nbytes;
        if ((rc = mdb_put(txn, e->values, &key, &val, MDB_RESERVE)))
            return simai_lmdb_fail(rc, url, "writing");
        fill((uint8_t *)val.mv_data + h->offset, h, src);
        simai_head_write(h, val.mv_data);
        return SIMAI_OK;
    }
    val.mv_size = h->nbytes; /* the payload apart, copied once, straight into the mapping */
    if ((rc = mdb_put(txn, e->payloads, &key, &val, MDB_RESERVE)))
        return simai_lmdb_fail(rc, url, "writing");
    fill(val.mv_data, h, src);
    val.mv_size = h->offset;
    if ((rc = mdb_put(txn, e->values, &key, &val, MDB_RESERVE)))
        return simai_lmdb_fail(rc, url, "writing");
    simai_head_write(h, val.mv_data);
    return SIMAI_OK;
}

int simai_pop_entry(MDB_txn *txn, struct simai_env *e, const struct simai_lkey *k, int *existed,
                    const char *url)
{
    MDB_val key = {k->n, (void *)k->b}, old;
    int rc = mdb_get(txn, e->values, &key, &old), was_split;
    *existed = 0;
    if (rc == MDB_NOTFOUND)
        return SIMAI_OK;
    if (rc)
        return simai_lmdb_fail(rc, url, "reading");
    was_split = split(&old);
    if ((rc = mdb_del(txn, e->values, &key, NULL)))
        return simai_lmdb_fail(rc, url, "deleting");
    if (was_split && (rc = mdb_del(txn, e->payloads, &key, NULL)) && rc != MDB_NOTFOUND)
        return simai_lmdb_fail(rc, url, "deleting");
    *existed = 1;
    return SIMAI_OK;
}

int simai_fetch(MDB_txn *txn, struct simai_env *e, const struct simai_lkey *k,
                struct simai_head *h, const uint8_t **payload, const char *url)
{
    MDB_val key = {k->n, (void *)k->b}, record, apart;
    char found[64] = "no payload";
    int rc = mdb_get(txn, e->values, &key, &record);
    if (rc == MDB_NOTFOUND)
        return SIMAI_ERR_NOT_FOUND;
    if (rc)
        return simai_lmdb_fail(rc, url, "reading");
    if ((rc = simai_head_parse(h, record.mv_data, record.mv_size)))
        return rc;
    if (record.mv_size == h->offset + h->nbytes) {
        *payload = (const uint8_t *)record.mv_data + h->offset;
        return SIMAI_OK;
    }
    if (record.mv_size == h->offset) {
        rc = mdb_get(txn, e->payloads, &key, &apart);
        if (rc && rc != MDB_NOTFOUND)
            return simai_lmdb_fail(rc, url, "reading");
        if (!rc && apart.mv_size == h->nbytes) {
            *payload = apart.mv_data;
            return SIMAI_OK;
        }
        if (!rc)
            snprintf(found, sizeof found, "%zu payload bytes", apart.mv_size);
    }
    return simai_fail(SIMAI_ERR_CORRUPT,
                      "entry is truncated: its header announces %" PRIu64
                      " payload bytes, found %s",
                      h->nbytes, found);
}

/* "<f8 (3, 4)" */
static void describe(char *out, size_t cap, const char *dtype, int ndim, const uint64_t *shape)
{
    size_t n = (size_t)snprintf(out, cap, "%s (", dtype);
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%" PRIu64, i ? ", " : "", shape[i]);
    if (n < cap)
        snprintf(out + n, cap - n, ndim == 1 ? ",)" : ")");
}

static int check_array(const struct simai_head *h, const struct simai_want *w)
{
    char want[200], have[200];
    int same = w->ndim == h->ndim && !strcmp(w->dtype, h->dtype);
    for (int i = 0; same && i < h->ndim; i++)
        same = w->shape[i] == h->shape[i];
    if (same)
        return SIMAI_OK;
    describe(want, sizeof want, w->dtype, w->ndim, w->shape);
    describe(have, sizeof have, h->dtype, h->ndim, h->shape);
    return simai_fail(SIMAI_ERR_TYPE, "the buffer is %s, the stored array is %s", want, have);
}

/* A new buffer is written for the first time by its copy, which costs a page fault per page
 * the allocator has not used before. Transparent huge pages make those faults 512 times
 * fewer: the kernel backs each 2 MiB aligned, advised range with one. Up to REUSED_MAX, glibc's
 * malloc serves a size from memory freed before (its mmap threshold follows the sizes freed,
 * up to 32 MiB), which takes no faults at all: such a buffer comes from malloc, its aligned
 * 2 MiB ranges advised, as NumPy allocates Python's arrays. Above it every buffer is a fresh
 * mapping, made of whole huge pages, 2 MiB aligned and advised; with glibc, simai_alloc_free
 * keeps the last one freed for the next such buffer it can serve (kept), so that a loop which
 * reads and frees a large value takes its faults once, as malloc's reuse gives smaller ones.
 * The kernel may take a kept buffer's memory back when it runs short (MADV_FREE): then its
 * next use takes the faults after all. */
#define HUGE_PAGE ((size_t)2 << 20)
#define REUSED_MAX ((size_t)32 << 20)

#ifdef __GLIBC__
static _Atomic(void *) kept; /* a lock would need care across fork() */

__attribute__((destructor)) static void free_kept(void)
{
    free(atomic_exchange(&kept, NULL));
}
#endif

static void advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    uintptr_t start = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t end = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_HUGEPAGE); /* a hint: THP may be off */
#else
    (void)p, (void)n;
#endif
}

void *simai_alloc(size_t n)
{
    size_t size;
    void *p = NULL;
    if (!n)
        n = 1; /* a pointer that is not NULL, for an empty value */
    if (n <= REUSED_MAX) {
        if ((p = malloc(n)))
            advise_huge(p, n);
        return p;
    }
    if (n > SIZE_MAX - HUGE_PAGE)
        return NULL;
    size = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE; /* C11: a multiple of the alignment */
#ifdef __GLIBC__
    if ((p = atomic_exchange(&kept, NULL))) {
        size_t has = malloc_usable_size(p);
        void *none = NULL;
        if (has < size || has - size > size / 4) { /* too small, or much too large: keep it */
            if (!atomic_compare_exchange_strong(&kept, &none, p))
                free(p); /* another was kept meanwhile */
            p = NULL;
        }
    }
#endif
    if (!p && (p = aligned_alloc(HUGE_PAGE, size)))
        advise_huge(p, size);
    return p;
}

void simai_alloc_free(void *p)
{
#ifdef __GLIBC__
    size_t has = p ? malloc_usable_size(p) : 0;
    if (has > REUSED_MAX && !((uintptr_t)p & (HUGE_PAGE - 1))) {
#ifdef MADV_FREE
        madvise(p, has & ~(HUGE_PAGE - 1), MADV_FREE); /* reclaimable, yet mapped */
#endif
        void *old = atomic_exchange(&kept, p);
        p = old == p ? NULL : old; /* the one kept before; a second free of p frees nothing */
    }
#endif
    free(p);
}

int simai_want_array(struct simai_want *w, const char *dtype, int ndim, const uint64_t *shape,
                     void *buf, int flags)
{
    struct simai_head want;
    int rc = simai_head_array(&want, dtype, ndim, shape); /* checks dtype and shape */
    if (rc)
        return rc;
    if (!buf && want.nbytes)
        return simai_fail(SIMAI_ERR_INVALID, "buf must not be NULL");
    *w = (struct simai_want){.kind = SIMAI_KIND_ARRAY, .dtype = dtype, .ndim = ndim,
                             .shape = shape, .flags = flags, .buf = buf, .cap = want.nbytes};
    return 0;
}

int simai_deliver(const struct simai_head *h, const uint8_t *payload, const struct simai_want *w)
{
    /* a JSON text read into a new buffer ends with a NUL, as simai_get_json ends it */
    int nul = w->nul || (w->alloc && h->kind == SIMAI_KIND_JSON);
    size_t need = h->nbytes + (nul ? 1 : 0);
    void *buf = w->buf;
    int rc;
    if (w->info)
        simai_head_info(h, w->info);
    if (w->n)
        *w->n = h->nbytes;
    if (w->head_only)
        return SIMAI_OK;
    if (w->kind >= 0 && h->kind != w->kind)
        return simai_fail(SIMAI_ERR_TYPE, "the value is %s, not %s", KIND_NAMES[h->kind],
                          KIND_NAMES[w->kind]);
    if (w->dtype && (rc = check_array(h, w)))
        return rc;
    if (w->view)
        return simai_verify(h, payload);
    if (w->alloc) {
        if (h->nbytes > SIZE_MAX - 1 || !(buf = simai_alloc(need)))
            return simai_fail(SIMAI_ERR_NOMEM, "out of memory: a buffer of %zu bytes", need);
    } else if (w->cap < need)
        return simai_fail(SIMAI_ERR_TOO_SMALL,
                          "the buffer holds %zu bytes; the value needs %zu", w->cap, need);
    if (!need)
        rc = simai_verify(h, payload);
    else if (w->flags & SIMAI_COLUMN_MAJOR && h->kind == SIMAI_KIND_ARRAY) {
        if (!(rc = simai_verify(h, payload))) /* before the copy: damage is never data */
            simai_transpose((void *)payload, buf, h->ndim, h->shape, h->itemsize, 0);
    } else if (simai_copy_hashed(buf, payload, h->nbytes, h->seed, 0) != h->checksum) {
        memset(buf, 0, h->nbytes);
        rc = simai_verify(h, payload);
    } else
        rc = SIMAI_OK;
    if (!rc && nul)
        ((char *)buf)[h->nbytes] = 0;
    if (w->alloc) {
        if (rc)
            simai_alloc_free(buf);
        else
            *w->alloc = buf;
    }
    return rc;
}

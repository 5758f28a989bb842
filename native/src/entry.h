/* Entries as LMDB holds them (the layout in local.py's docstring).
 *
 * Database `values` maps "v" + KEY to an entry (header and payload, or the header alone when
 * the payload is over SIMAI_INLINE_MAX bytes: that payload lives under the same key in
 * `payloads`), and "e" + STREAM + "\0" + INDEX (8 bytes, big-endian) to a stream's entries the
 * same way. Database `meta` holds each stream's state ("s" + STREAM), its consumer groups'
 * positions ("g" + STREAM + "\0" + GROUP) and the full names of keys longer than 240 bytes,
 * which are held under a hash ("n" + HASHED). */
#ifndef SIMAI_ENTRY_H
#define SIMAI_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "env.h"

#define SIMAI_INLINE_MAX (16 * 1024)
#define SIMAI_NAME_MAX 240
#define SIMAI_HASHED 0xFF /* never a byte of UTF-8 */

/* An LMDB key: a tag byte, a name, maybe a stream index. */
struct simai_lkey {
    uint8_t b[1 + SIMAI_NAME_MAX + 1 + 8];
    size_t n;
};

/* tag + the name as LMDB holds it: its UTF-8, or 0xFF + BLAKE2b-160 when over 240 bytes. */
void simai_lkey_name(struct simai_lkey *k, char tag, const char *name, size_t n);
/* "e" + STREAM + "\0" + index, big-endian */
void simai_lkey_entry(struct simai_lkey *k, const char *stream, size_t n, int64_t index);

/* A payload to write: row-major bytes, or a column-major array to transpose on the way. */
struct simai_src {
    const void *data;
    int colmajor;
};

/* Write the entry at `k` (header `h`, its checksum computed here, and the payload). */
int simai_put_entry(MDB_txn *txn, struct simai_env *e, const struct simai_lkey *k,
                    struct simai_head *h, const struct simai_src *src, const char *url);
/* Delete the entry at `k`; *existed says whether there was one. */
int simai_pop_entry(MDB_txn *txn, struct simai_env *e, const struct simai_lkey *k, int *existed,
                    const char *url);
/* The header and payload of the entry at `k`: SIMAI_ERR_NOT_FOUND (no message) if none,
 * SIMAI_ERR_CORRUPT if its header is damaged or its payload missing or cut. */
int simai_fetch(MDB_txn *txn, struct simai_env *e, const struct simai_lkey *k,
                struct simai_head *h, const uint8_t **payload, const char *url);

/* What a read wants of an entry, and where the payload goes. */
struct simai_want {
    int kind;               /* SIMAI_KIND_*, or -1 for any */
    const char *dtype;      /* for arrays: the dtype and shape asked for (NULL: any) */
    int ndim;
    const uint64_t *shape;
    int flags;              /* SIMAI_COLUMN_MAJOR */
    int view;               /* verify in place, no copy */
    int head_only;          /* fill info and n only: no check, no copy */
    void *buf;
    size_t cap;
    void **alloc;           /* instead of buf: a new buffer (simai_alloc), *alloc on success */
    int nul;                /* add a terminating NUL (JSON) */
    simai_info *info;       /* optional */
    size_t *n;              /* optional: the payload's length */
};

/* `w` for an array of `dtype` and `shape` read into `buf` (simai_get_array and its stream and
 * group forms): SIMAI_ERR_INVALID or SIMAI_ERR_TYPE, with a message, for a bad dtype or
 * shape or a NULL buf where bytes are due. */
int simai_want_array(struct simai_want *w, const char *dtype, int ndim, const uint64_t *shape,
                     void *buf, int flags);

/* Check the entry against `w`, verify its checksum, and copy its payload into w->buf (zeroed
 * again if the checksum fails, so damage is never data), or into a new buffer for w->alloc
 * (freed again if anything fails). */
int simai_deliver(const struct simai_head *h, const uint8_t *payload, const struct simai_want *w);

/* A new buffer of n bytes for a payload (simai_get_alloc; freed with simai_alloc_free), in
 * transparent huge pages where the kernel gives them; NULL when out of memory. */
void *simai_alloc(size_t n);
void simai_alloc_free(void *p);

#endif

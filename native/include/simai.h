/* simai.h: the C client of simai's store (C11, a stable C ABI).
 *
 * A simulation written in C, C++ or Fortran puts arrays, bytes and JSON into the store its
 * workflow runs with, reads what Python components put there, waits for keys and appends to
 * streams. Values use the same keys and the same wire format (header, payload, XXH3 checksum)
 * as the Python client, so either side reads what the other wrote.
 *
 * Backends, chosen by the URL's scheme, as in Python:
 *   local://NAME, local:///dir   an LMDB environment in /dev/shm shared by every process of
 *                                the node, Python and C alike; zero-copy views
 *   file:///dir                  a private directory on a shared filesystem (one file per
 *                                value, renamed into place); waits poll
 *   redis://host:port[,host:port...]  redis-server shards (crc32(name) % shards); the
 *                                password comes from $SIMAI_STORE_PASSWORD, never the command
 *                                line; waits are woken by Redis pub/sub
 *
 * Errors: every function returns SIMAI_OK (0) or one of the SIMAI_ERR_* codes below, and then
 * simai_last_error() is a message saying what went wrong (thread-local: the message of the
 * last failing call in the calling thread). Nothing aborts or exits the caller. Arguments
 * are checked: a NULL handle or pointer is SIMAI_ERR_INVALID, not a crash.
 *
 * Thread safety: one simai_store handle may be used by many threads at once; every call is
 * self-contained (local: its own LMDB transaction; redis: each shard's connection is held
 * for one call at a time, and each wait subscribes on a connection of its own). simai_close
 * and simai_destroy must not race with other calls on the same handle. Views (simai_view) may be read and
 * released from any thread, also after their store was closed. Local writers take turns on
 * the store's write lock, shared by every process; readers never wait. Handles do not survive
 * fork(): a child opens its own. libsimai starts one thread of its own per process, on the
 * first copy of a large value, to compute checksums beside copies (it blocks every signal; a
 * child of fork() starts its own).
 *
 * Arrays: dtype is a numpy type string ("<f8", "<i4", "|u1", "|b1", "<c16", "<f2", ">f4" ...;
 * the SIMAI_DTYPE_* macros name the native ones), shape has ndim (0 to SIMAI_MAX_NDIM) extents.
 * Data is row-major (C order) unless flags has SIMAI_COLUMN_MAJOR: then the buffer is
 * column-major (Fortran order) and is transposed on the way in and out, so that a Fortran
 * array a(nx, ny) is stored, and read in Python, as shape (nx, ny) with a[i, j] == a(i+1, j+1).
 */
#ifndef SIMAI_H
#define SIMAI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SIMAI_API __attribute__((visibility("default")))
#else
#define SIMAI_API
#endif

#define SIMAI_VERSION_MAJOR 0
#define SIMAI_VERSION_MINOR 1
#define SIMAI_VERSION_PATCH 0

/* Return codes. Values never change; new codes may be added. */
enum {
    SIMAI_OK = 0,
    SIMAI_ERR_INVALID = 1,      /* a bad argument: key, URL, dtype, shape, JSON text, NULL */
    SIMAI_ERR_NOT_FOUND = 2,    /* no value under the key */
    SIMAI_ERR_TIMEOUT = 3,      /* a wait, stream read or blocked append ran out of time */
    SIMAI_ERR_CORRUPT = 4,      /* the stored entry fails its checksum or is damaged */
    SIMAI_ERR_TYPE = 5,         /* the entry is of another kind, dtype or shape than asked */
    SIMAI_ERR_TOO_SMALL = 6,    /* the caller's buffer is too small (the size needed is given) */
    SIMAI_ERR_PERMISSION = 7,   /* a directory or file that is not the user's own, or public;
                                   Redis refused the password (or wanted one), or the store
                                   user may not touch the key; a TLS certificate refused */
    SIMAI_ERR_FULL = 8,         /* the store's filesystem is full */
    SIMAI_ERR_CLOSED = 9,       /* the store was destroyed */
    SIMAI_ERR_IO = 10,          /* the store cannot be opened or reached, or an OS, LMDB or
                                   Redis call failed */
    SIMAI_ERR_NOMEM = 11,       /* out of memory */
    SIMAI_ERR_ENDED = 12,       /* the stream was closed and has no entry at this index */
    SIMAI_ERR_TRIMMED = 13,     /* the entry was trimmed from a bounded stream */
    SIMAI_ERR_UNSUPPORTED = 14, /* a backend or feature this version does not have */
    SIMAI_ERR_STREAM_CLOSED = 15 /* append to a stream that was closed */
};

/* What an entry holds (its kind byte in the wire format). */
enum { SIMAI_KIND_BYTES = 0, SIMAI_KIND_ARRAY = 1, SIMAI_KIND_JSON = 2, SIMAI_KIND_PICKLE = 3 };

/* put/get/append flags */
enum { SIMAI_COLUMN_MAJOR = 1 };

#define SIMAI_MAX_NDIM 32
#define SIMAI_MAX_KEY_BYTES 1024

/* numpy type strings of this machine's native types */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SIMAI_NATIVE_ ">"
#else
#define SIMAI_NATIVE_ "<"
#endif
#define SIMAI_DTYPE_BOOL "|b1"
#define SIMAI_DTYPE_I8 "|i1"
#define SIMAI_DTYPE_U8 "|u1"
#define SIMAI_DTYPE_I16 SIMAI_NATIVE_ "i2"
#define SIMAI_DTYPE_U16 SIMAI_NATIVE_ "u2"
#define SIMAI_DTYPE_I32 SIMAI_NATIVE_ "i4"
#define SIMAI_DTYPE_U32 SIMAI_NATIVE_ "u4"
#define SIMAI_DTYPE_I64 SIMAI_NATIVE_ "i8"
#define SIMAI_DTYPE_U64 SIMAI_NATIVE_ "u8"
#define SIMAI_DTYPE_F16 SIMAI_NATIVE_ "f2"
#define SIMAI_DTYPE_F32 SIMAI_NATIVE_ "f4"
#define SIMAI_DTYPE_F64 SIMAI_NATIVE_ "f8"
#define SIMAI_DTYPE_C64 SIMAI_NATIVE_ "c8"
#define SIMAI_DTYPE_C128 SIMAI_NATIVE_ "c16"

/* A stored entry's header. The layout is fixed (288 bytes, no padding; Fortran binds it). */
typedef struct simai_info {
    int32_t kind;                   /* SIMAI_KIND_* */
    int32_t ndim;                   /* 0 unless an array of rank 1 or more */
    char dtype[16];                 /* numpy type string, NUL-terminated; "" unless an array */
    uint64_t nbytes;                /* payload length in bytes */
    uint64_t shape[SIMAI_MAX_NDIM]; /* C order; shape[i] for i < ndim */
} simai_info;

/* A bounded stream's policy, as simai_stream_state.policy gives it. */
enum { SIMAI_POLICY_NONE = 0, SIMAI_POLICY_BLOCK = 1, SIMAI_POLICY_DROP_OLDEST = 2 };

/* A stream's state (Python: Store.stream_info). */
typedef struct simai_stream_state {
    int64_t length;  /* values appended so far */
    int64_t start;   /* first index still held */
    int64_t dropped; /* values a "drop_oldest" bound trimmed before every group read them */
    int64_t maxlen;  /* 0: unbounded */
    int32_t policy;  /* SIMAI_POLICY_*: 0 unbounded, 1 "block", 2 "drop_oldest" */
    int32_t closed;  /* 1 once the producer closed it */
} simai_stream_state;

typedef struct simai_store simai_store;
typedef struct simai_view simai_view;

/* --- errors and version ---------------------------------------------------------------- */

/* The message of the last call that failed in this thread ("" if none). Valid until the next
 * failing call in this thread. */
SIMAI_API const char *simai_last_error(void);
/* The code's name: "SIMAI_ERR_NOT_FOUND" ... (a static string; "SIMAI_ERR_?" if unknown). */
SIMAI_API const char *simai_code_name(int code);
/* "0.1.0" */
SIMAI_API const char *simai_version(void);

/* --- opening ----------------------------------------------------------------------------- */

/* Open the store named by $SIMAI_STORE (the run's store), else local://default. */
SIMAI_API int simai_open(simai_store **store);
/* Open the store at `url`: local://NAME is $SIMAI_SHM_DIR/simai-UID/NAME (/dev/shm unless
 * set), local:///dir the directory itself; both, and file:///dir, are made private (0700)
 * and refused when another user owns them or others may write them, as in Python.
 * redis:// connects to every shard now (SIMAI_ERR_IO if one cannot be reached within 5 s,
 * SIMAI_ERR_PERMISSION if it refuses the password); a password written in the URL is
 * accepted, as Python accepts it, and cut out of simai_url. The store user is the URL's
 * (redis://user@host:port), else $SIMAI_STORE_USER, with the secret $SIMAI_STORE_PASSWORD.
 * rediss:// is the same over TLS (1.2 at least): the server's certificate must be signed by
 * the CA in $SIMAI_STORE_TLS_CA and name the address dialled, and the client presents the
 * certificate and key in $SIMAI_STORE_TLS_CERT and $SIMAI_STORE_TLS_KEY (SIMAI_ERR_INVALID,
 * naming the variable, when one is unset or unusable; SIMAI_ERR_PERMISSION when either side
 * refuses the other's certificate; SIMAI_ERR_UNSUPPORTED when libsimai was built without
 * OpenSSL). */
SIMAI_API int simai_open_url(const char *url, simai_store **store);
/* Let go of the handle (NULL does nothing). Views made from it stay valid until released. */
SIMAI_API int simai_close(simai_store *store);
/* The URL the store was opened with. */
SIMAI_API const char *simai_url(const simai_store *store);
/* Delete the store and everything in it (Python: store.destroy()), on local:// and file://
 * stores: its directory is removed; every handle on it, in any process, Python or C, gets
 * SIMAI_ERR_CLOSED from then on (this one too: simai_close it), and views already made stay
 * valid while they live. Opening the URL again makes a new, empty store. redis:// stores are
 * SIMAI_ERR_UNSUPPORTED, as Python's RedisStore has no destroy. Must not race with other
 * calls on the same handle. */
SIMAI_API int simai_destroy(simai_store *store);

/* --- values ------------------------------------------------------------------------------ */

SIMAI_API int simai_put_bytes(simai_store *store, const char *key, const void *data, size_t n);
/* `json` is UTF-8 JSON text (checked: invalid JSON is SIMAI_ERR_INVALID). */
SIMAI_API int simai_put_json(simai_store *store, const char *key, const char *json);
SIMAI_API int simai_put_array(simai_store *store, const char *key, const char *dtype, int ndim,
                              const uint64_t *shape, const void *data, int flags);

/* The header of the value under `key`: its kind, dtype, shape and payload size. */
SIMAI_API int simai_info_get(simai_store *store, const char *key, simai_info *info);
/* Copy the payload of any kind of value into `buf` (`cap` bytes) and fill `info` (optional).
 * SIMAI_ERR_TOO_SMALL, with `info` filled, when cap < info->nbytes (buf may be NULL then).
 * `info` is all zeros after an error that left the header unread (a missing or damaged value). */
SIMAI_API int simai_get(simai_store *store, const char *key, void *buf, size_t cap,
                        simai_info *info);
/* A bytes value: copied into `buf`; *n is its length (also on SIMAI_ERR_TOO_SMALL). */
SIMAI_API int simai_get_bytes(simai_store *store, const char *key, void *buf, size_t cap,
                              size_t *n);
/* A JSON value: copied into `buf` with a terminating NUL; *n is its length without the NUL
 * (also on SIMAI_ERR_TOO_SMALL, when cap < *n + 1). */
SIMAI_API int simai_get_json(simai_store *store, const char *key, char *buf, size_t cap,
                             size_t *n);
/* An array of exactly this dtype and shape (else SIMAI_ERR_TYPE, saying what is stored),
 * copied into `buf` (row-major, or column-major with SIMAI_COLUMN_MAJOR). */
SIMAI_API int simai_get_array(simai_store *store, const char *key, const char *dtype, int ndim,
                              const uint64_t *shape, void *buf, int flags);

/* The payload of any kind of value in a new buffer that libsimai allocates: *data, freed
 * with simai_free, holds info->nbytes bytes (a JSON text is followed by a NUL), and is never
 * NULL on success, even for an empty value; it is NULL after an error (a damaged value is
 * SIMAI_ERR_CORRUPT and no data). `info` (optional) is filled as simai_get fills it. The
 * buffer is advised to use transparent huge pages (madvise MADV_HUGEPAGE), as NumPy allocates
 * Python's arrays, so that its first write costs a page fault per 2 MiB rather than per
 * 4 KiB where the kernel's THP mode is "madvise" or "always": up to 32 MiB it comes from
 * malloc (which reuses memory freed before) with its aligned 2 MiB ranges advised; above,
 * it is 2 MiB aligned, whole huge pages. It is aligned at least as malloc aligns. */
SIMAI_API int simai_get_alloc(simai_store *store, const char *key, void **data,
                              simai_info *info);
/* Free a buffer of simai_get_alloc (NULL does nothing). With glibc, the last one freed above
 * 32 MiB is kept, as malloc keeps smaller ones, and serves the next simai_get_alloc above
 * 32 MiB that needs at least 4/5 of it (any thread): a loop that reads and frees a large value
 * takes its page faults once. The kernel may reclaim a kept buffer's memory when it runs short
 * (MADV_FREE), and libsimai frees it when it is unloaded. */
SIMAI_API void simai_free(void *data);

/* Zero-copy read (local stores; file and redis stores give a private copy, read whole):
 * *data points at the payload inside the store's shared mapping, read-only,
 * valid until simai_view_release (a snapshot: later overwrites and deletes do not change it).
 * The checksum is verified first. Payloads over half a memory page (2 KiB with 4 KiB pages)
 * start 16-byte aligned; smaller ones may start at any address, odd ones too (copy them, or
 * use simai_get_array, where alignment matters).
 * Each live view holds one of the store's 4096 reader slots: release views you are done with. */
SIMAI_API int simai_view_get(simai_store *store, const char *key, simai_view **view,
                             const void **data, simai_info *info);
SIMAI_API int simai_view_release(simai_view *view);

/* *exists is 1 if the key holds a value, else 0. */
SIMAI_API int simai_exists(simai_store *store, const char *key, int *exists);
/* Delete the key; *existed (optional) says whether it held a value. */
SIMAI_API int simai_delete(simai_store *store, const char *key, int *existed);
/* Every key starting with `prefix` (NULL or "": all), sorted by bytes: *keys is an array of
 * *count NUL-terminated strings, freed with simai_free_keys. */
SIMAI_API int simai_keys(simai_store *store, const char *prefix, char ***keys, size_t *count);
SIMAI_API void simai_free_keys(char **keys, size_t count);
/* Block until `key` exists; SIMAI_ERR_TIMEOUT after `timeout` seconds (< 0: no limit).
 * Wakes as soon as any writer, Python or C, commits the key (file stores: polls, every 50 ms
 * at most). */
SIMAI_API int simai_wait(simai_store *store, const char *key, double timeout);

/* --- streams ----------------------------------------------------------------------------- */

/* Append to a stream; *index (optional) is the value's index. A full "block" stream makes
 * this wait up to `timeout` seconds (< 0: no limit) for its consumer groups, then
 * SIMAI_ERR_TIMEOUT (nothing appended); a closed stream is SIMAI_ERR_STREAM_CLOSED. */
SIMAI_API int simai_append_bytes(simai_store *store, const char *stream, const void *data,
                                 size_t n, double timeout, int64_t *index);
SIMAI_API int simai_append_json(simai_store *store, const char *stream, const char *json,
                                double timeout, int64_t *index);
SIMAI_API int simai_append_array(simai_store *store, const char *stream, const char *dtype,
                                 int ndim, const uint64_t *shape, const void *data, int flags,
                                 double timeout, int64_t *index);
/* Entry `index` of a stream, as simai_get gives a value, waiting up to `timeout` seconds
 * (< 0: no limit) for it to be appended. SIMAI_ERR_ENDED when the stream was closed before
 * holding it, SIMAI_ERR_TRIMMED when a bound trimmed it (simai_stream_info: the new start). */
SIMAI_API int simai_stream_get(simai_store *store, const char *stream, int64_t index,
                               double timeout, void *buf, size_t cap, simai_info *info);
/* Entry `index` of a stream as a zero-copy view (see simai_view_get). */
SIMAI_API int simai_stream_view(simai_store *store, const char *stream, int64_t index,
                                double timeout, simai_view **view, const void **data,
                                simai_info *info);
/* A stream's state; a stream never appended to has all zeros. */
SIMAI_API int simai_stream_info(simai_store *store, const char *stream,
                                simai_stream_state *state);
/* Mark a stream finished: readers get SIMAI_ERR_ENDED (Python: the iteration ends) after its
 * last value. */
SIMAI_API int simai_stream_close(simai_store *store, const char *stream);
/* Declare a stream before its first append (Python: store.create_stream(name, maxlen,
 * policy)): it keeps at most its newest `maxlen` values. `policy` is "block" (NULL: the
 * default), where a full stream's appends wait for its slowest consumer group and nothing a
 * group has not acknowledged is trimmed, or "drop_oldest", where appends never wait and the
 * oldest value goes (counted in simai_stream_state.dropped when no group had read it).
 * Declaring again with the same bounds does nothing, so producers and consumers may all
 * declare. `maxlen` 0 means unbounded (Python: maxlen=None), which is what an undeclared
 * stream is: it only checks that the stream has no bounds. SIMAI_ERR_INVALID, with nothing
 * changed, for maxlen < 0, another policy, other bounds than the stream was declared with,
 * or bounds for a stream that already holds values appended without them. The bounds last
 * until simai_stream_delete. */
SIMAI_API int simai_stream_create(simai_store *store, const char *stream, int64_t maxlen,
                                  const char *policy);
/* Delete a stream: its values, bounds, consumer groups and closed mark (Python:
 * store.delete_stream). *existed (optional) says whether there was anything to delete. A
 * stream of the same name made afterwards starts empty, at index 0. */
SIMAI_API int simai_stream_delete(simai_store *store, const char *stream, int *existed);

/* --- consumer groups (Python: store.stream(name, group="...")) ------------------------------- */

/* The index consumer group `group` reads next: its recorded position, 0 when it has none (a
 * restarted reader resumes there). */
SIMAI_API int simai_group_position(simai_store *store, const char *stream, const char *group,
                                   int64_t *index);
/* Read entry *index of a stream for consumer group `group`, as simai_stream_get reads it.
 * First records *index as the group's position, which acknowledges every entry before it: a
 * "block" stream's producers wait for the slowest group, and trimming spares what a group
 * has not acknowledged. An entry a bound trimmed before the group got to it is skipped:
 * *index moves on to the stream's start. On SIMAI_OK *index is the index of the entry read;
 * pass *index + 1 for the next. One reader per group at a time.
 *
 *     int64_t i;
 *     simai_group_position(s, "samples", "trainer", &i);
 *     while (!(rc = simai_group_get(s, "samples", "trainer", &i, 30, buf, cap, &info)))
 *         use(buf), i++;
 *     // rc == SIMAI_ERR_ENDED: the producer closed the stream and every entry was read
 */
SIMAI_API int simai_group_get(simai_store *store, const char *stream, const char *group,
                              int64_t *index, double timeout, void *buf, size_t cap,
                              simai_info *info);
/* simai_group_get into an array of exactly this dtype and shape (else SIMAI_ERR_TYPE, saying
 * what is stored; the entry stays unread), as simai_get_array reads a value: row-major, or
 * column-major with SIMAI_COLUMN_MAJOR. */
SIMAI_API int simai_group_get_array(simai_store *store, const char *stream, const char *group,
                                    int64_t *index, double timeout, const char *dtype,
                                    int ndim, const uint64_t *shape, void *buf, int flags);

/* --- dtypes ------------------------------------------------------------------------------ */

/* The size in bytes of one element of `dtype`, or 0 if simai does not know the type string. */
SIMAI_API size_t simai_dtype_size(const char *dtype);

#ifdef __cplusplus
}
#endif

#endif /* SIMAI_H */

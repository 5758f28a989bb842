/* The parts of the file:// backend its files share: names, and files written aside and
 * renamed into place (backend_file.c, which also holds the values); streams are in
 * backend_file_stream.c. */
#ifndef SIMAI_BACKEND_FILE_H
#define SIMAI_BACKEND_FILE_H

#include <fcntl.h>
#include <sys/types.h>

#include "backend.h"

#define NAME_CAP (3 * SIMAI_MAX_KEY_BYTES + 8)
#define DIRFLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
#define NEW (O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC)

/* The store's directory and its values/, streams/ and tmp/ directories. */
struct fstore {
    int root, values, streams, tmp;
};

#define F(s) ((struct fstore *)(s)->impl)

/* errno after `what` failed, as a code (FULL, PERMISSION or IO) and a message. */
int simai_file_fail(const char *url, const char *what);
/* file.py encode_name: `key` percent-encoded, or "~" + hex BLAKE2b-160 when over 200
 * characters; out has NAME_CAP bytes. */
void simai_file_name(const char *key, size_t n, char *out);
/* SIMAI_ERR_CLOSED once the store's directory was removed (destroyed), else SIMAI_OK. */
int simai_file_gone(simai_store *s);
/* Write head and data to a new private file in tmp/; its name (64 bytes) into `tmp`. */
int simai_file_stage(simai_store *s, const void *head, size_t hn, const void *data, size_t n,
                     char *tmp);
/* Rename tmp/`tmp` over `name` in `dir`, replacing what was there. */
int simai_file_publish(simai_store *s, const char *tmp, int dir, const char *name);
/* The file `name` in `dir` (its first `limit` bytes), malloc'd: SIMAI_ERR_NOT_FOUND (no
 * message) if none, SIMAI_ERR_PERMISSION for a symlink. */
int simai_file_read(simai_store *s, int dir, const char *name, size_t limit, uint8_t **buf,
                    size_t *len);
/* A small file's text (NUL-terminated) into buf; its length, or -1 if there is none. */
ssize_t simai_file_read_small(int dir, const char *name, char *buf, size_t cap);
int simai_file_exists_in(int dir, const char *name);

/* Streams and consumer groups (backend_file_stream.c), for the backend's table. */
int simai_file_append(simai_store *s, const char *stream, size_t n, struct simai_head *h,
                      const struct simai_src *src, double deadline, int64_t *index);
int simai_file_stream_get(simai_store *s, const char *stream, size_t n, int64_t index,
                          double deadline, const struct simai_want *w, simai_view **view,
                          const void **data);
int simai_file_stream_info(simai_store *s, const char *stream, size_t n,
                           simai_stream_state *st);
int simai_file_stream_close(simai_store *s, const char *stream, size_t n);
int simai_file_stream_create(simai_store *s, const char *stream, size_t n,
                             const simai_stream_state *want, simai_stream_state *have);
int simai_file_stream_delete(simai_store *s, const char *stream, size_t n, int *existed);
int simai_file_position(simai_store *s, const char *stream, size_t n, const char *group,
                        size_t gn, int64_t *index, int *found);
int simai_file_set_position(simai_store *s, const char *stream, size_t n, const char *group,
                            size_t gn, int64_t index);

#endif

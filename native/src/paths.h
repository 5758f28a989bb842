/* Where a local:// store lives, and the private-directory rules (simai/store/private.py). */
#ifndef SIMAI_PATHS_H
#define SIMAI_PATHS_H

#include <stddef.h>
#include <sys/types.h>

/* The directory a local:// URL names, made private, into `out` (`cap` bytes):
 * local:///dir is /dir; local://NAME is NAME in the private $SIMAI_SHM_DIR/simai-UID
 * (/dev/shm unless set). SIMAI_ERR_INVALID for another form, SIMAI_ERR_PERMISSION when a
 * directory is not this user's own, SIMAI_ERR_IO when it cannot be made. */
int simai_local_root(const char *url, char *out, size_t cap);

/* `path` as a private directory: made 0700 (with its parents) if missing, else checked as
 * Python's private_dir checks it, and made 0700 if others may read it. */
int simai_private_dir(const char *path);

/* private.py's check_private on an existing path: SIMAI_ERR_NOT_FOUND (no message) if there
 * is none, SIMAI_ERR_PERMISSION for a symlink or a directory not private to this user. */
int simai_check_private(const char *path);

/* Remove `name` in directory `dir` (AT_FDCWD: a path) and, for a directory, everything in it,
 * never following a symlink (shutil.rmtree). -1 with errno if `name` could not be removed. */
int simai_rmtree_at(int dir, const char *name);

/* os.path.abspath: `path` made absolute and normalized lexically, into `out`. */
int simai_abspath(const char *path, char *out, size_t cap);

/* "name (uid N)" or "uid N", for messages. */
void simai_owner_name(uid_t uid, char *out, size_t cap);

#endif

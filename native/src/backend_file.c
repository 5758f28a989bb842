/* The file:// backend (simai/store/file.py): a private directory on a shared filesystem.
 *
 * values/NAME holds a key's whole entry; NAME is the key percent-encoded, or "~" + the hex
 * BLAKE2b-160 of it when that is over 200 characters (its full name then in NAME.key). A
 * writer fills tmp/ and renames over NAME, so readers see the old entry or the new one.
 * streams/NAME/ holds a stream: entries named by their 12-digit index, claimed with link(2);
 * "closed" once closed; a bounded stream adds "bounds" (JSON), "state" (<qqq: head, start,
 * dropped), "groups/" (one "POSITION\nGROUP" file per consumer group) and "lock", an flock
 * held while an append checks for space, claims an index and trims. No symlink is followed;
 * waits poll with a backoff, as change notification does not cross nodes. This file holds
 * the values; backend_file_stream.c the streams. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend_file.h"
#include "blake2b.h"
#include "error.h"
#include "internal.h"
#include "paths.h"

#define MAX_NAME 200
#define READ (O_RDONLY | O_NOFOLLOW | O_CLOEXEC)

static atomic_ulong staged;

int simai_file_fail(const char *url, const char *what)
{
    int code = errno == ENOSPC || errno == EDQUOT ? SIMAI_ERR_FULL
               : errno == EACCES || errno == EPERM ? SIMAI_ERR_PERMISSION
                                                   : SIMAI_ERR_IO;
    return simai_fail(code, "store %s: %s: %s", url, what, strerror(errno));
}

/* file.py simai_file_name */
void simai_file_name(const char *key, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-')
            out[j++] = (char)c;
        else {
            out[j++] = '%';
            out[j++] = hex[c >> 4];
            out[j++] = hex[c & 15];
        }
    }
    out[j] = 0;
    if (out[0] == '.') {
        memmove(out + 3, out + 1, j);
        memcpy(out, "%2E", 3);
        j += 2;
    }
    if (j > MAX_NAME) {
        uint8_t d[20];
        simai_blake2b(d, sizeof d, key, n);
        out[0] = '~';
        for (int i = 0; i < 20; i++) {
            out[1 + 2 * i] = "0123456789abcdef"[d[i] >> 4];
            out[2 + 2 * i] = "0123456789abcdef"[d[i] & 15];
        }
        out[41] = 0;
    }
}

static size_t decode_name(const char *name, char *out)
{
    size_t j = 0;
    for (size_t i = 0; name[i]; i++) {
        if (name[i] == '%' && name[i + 1] && name[i + 2]) {
            char h[3] = {name[i + 1], name[i + 2], 0};
            out[j++] = (char)strtol(h, NULL, 16);
            i += 2;
        } else
            out[j++] = name[i];
    }
    return j;
}

int simai_file_gone(simai_store *s)
{
    struct stat st;
    if (fstat(F(s)->root, &st) == 0 && st.st_nlink > 0)
        return SIMAI_OK;
    return simai_fail(SIMAI_ERR_CLOSED, "store %s was destroyed", s->url);
}

/* --- files --------------------------------------------------------------------------------- */

/* Write header and payload to a new private file in tmp/; its name into `tmp`. */
int simai_file_stage(simai_store *s, const void *head, size_t hn, const void *data, size_t n,
                     char *tmp)
{
    struct iovec iov[2] = {{(void *)head, hn}, {(void *)data, n}};
    int fd, rc = SIMAI_OK;
    snprintf(tmp, 64, "c%ld-%lu", (long)getpid(), atomic_fetch_add(&staged, 1));
    if ((fd = openat(F(s)->tmp, tmp, NEW, 0600)) < 0)
        return simai_file_fail(s->url, "cannot write a value");
    for (int i = 0; i < 2 && !rc;) {
        ssize_t w = writev(fd, iov + i, 2 - i);
        if (w < 0) {
            rc = simai_file_fail(s->url, "cannot write a value");
            break;
        }
        while (i < 2 && (size_t)w >= iov[i].iov_len)
            w -= (ssize_t)iov[i++].iov_len;
        if (i < 2) {
            iov[i].iov_base = (char *)iov[i].iov_base + w;
            iov[i].iov_len -= (size_t)w;
        }
    }
    close(fd);
    if (rc)
        unlinkat(F(s)->tmp, tmp, 0);
    return rc;
}

int simai_file_publish(simai_store *s, const char *tmp, int dir, const char *name)
{
    if (!renameat(F(s)->tmp, tmp, dir, name))
        return SIMAI_OK;
    unlinkat(F(s)->tmp, tmp, 0);
    return simai_file_fail(s->url, "cannot simai_file_publish a value");
}

/* The whole file `name` in `dir`, malloc'd: SIMAI_ERR_NOT_FOUND (no message) if none. */
int simai_file_read(simai_store *s, int dir, const char *name, size_t limit, uint8_t **buf,
                    size_t *len)
{
    struct stat st;
    size_t got = 0;
    int fd = openat(dir, name, READ);
    if (fd < 0 && errno == ENOENT)
        return SIMAI_ERR_NOT_FOUND;
    if (fd < 0 && errno == ELOOP)
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "store %s: %s is a symlink, and simai follows none in a store", s->url,
                          name);
    if (fd < 0 || fstat(fd, &st)) {
        int rc = simai_file_fail(s->url, "cannot read a value");
        if (fd >= 0)
            close(fd);
        return rc;
    }
    if ((size_t)st.st_size < limit)
        limit = (size_t)st.st_size;
    if (!(*buf = malloc(limit + 1))) {
        close(fd);
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory reading %s", s->url);
    }
    while (got < limit) {
        ssize_t r = read(fd, *buf + got, limit - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return SIMAI_OK;
}

/* A small file's text (NUL-terminated) into buf; -1 if there is none. */
ssize_t simai_file_read_small(int dir, const char *name, char *buf, size_t cap)
{
    ssize_t n;
    int fd = openat(dir, name, READ);
    if (fd < 0)
        return -1;
    n = read(fd, buf, cap - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    return n;
}

int simai_file_exists_in(int dir, const char *name)
{
    struct stat st;
    return fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* --- values -------------------------------------------------------------------------------- */

static int file_put(simai_store *s, const char *key, size_t n, struct simai_head *h,
                    const struct simai_src *src)
{
    char name[NAME_CAP + 8], tmp[64], header[SIMAI_MAX_HEADER];
    const void *payload;
    void *copy;
    int rc = simai_seal(h, src, &payload, &copy);
    if (rc)
        return rc;
    simai_head_write(h, (uint8_t *)header);
    simai_file_name(key, n, name);
    rc = simai_file_stage(s, header, h->offset, payload, h->nbytes, tmp);
    free(copy);
    if (!rc && name[0] == '~') {
        char keytmp[64], keyname[sizeof name + 4];
        snprintf(keyname, sizeof keyname, "%s.key", name);
        if (!(rc = simai_file_stage(s, key, n, NULL, 0, keytmp)) &&
            (rc = simai_file_publish(s, keytmp, F(s)->values, keyname)))
            unlinkat(F(s)->tmp, tmp, 0);
    }
    return rc ? rc : simai_file_publish(s, tmp, F(s)->values, name);
}

static int file_get(simai_store *s, const char *key, size_t n, const struct simai_want *w,
                    simai_view **view, const void **data)
{
    char name[NAME_CAP], what[SIMAI_MAX_KEY_BYTES + 300];
    uint8_t *buf;
    size_t len;
    int rc;
    simai_file_name(key, n, name);
    rc = simai_file_read(s, F(s)->values, name, w->head_only ? SIMAI_MAX_HEADER : SIZE_MAX, &buf,
                         &len);
    if (rc == SIMAI_ERR_NOT_FOUND)
        return simai_file_gone(s) ? SIMAI_ERR_CLOSED
                       : simai_fail(rc, "key '%s' not found in %s", key, s->url);
    if (rc)
        return rc;
    snprintf(what, sizeof what, "key '%s' in %s", key, s->url);
    return simai_deliver_whole(buf, len, w, view, data, what);
}

static int file_exists(simai_store *s, const char *key, size_t n, int *exists)
{
    char name[NAME_CAP];
    simai_file_name(key, n, name);
    *exists = simai_file_exists_in(F(s)->values, name);
    return *exists ? SIMAI_OK : simai_file_gone(s);
}

static int file_del(simai_store *s, const char *key, size_t n, int *existed)
{
    char name[NAME_CAP + 8];
    simai_file_name(key, n, name);
    *existed = !unlinkat(F(s)->values, name, 0);
    if (!*existed && errno != ENOENT)
        return simai_file_fail(s->url, "cannot delete a value");
    if (*existed && name[0] == '~') {
        strcat(name, ".key");
        unlinkat(F(s)->values, name, 0);
    }
    return *existed ? SIMAI_OK : simai_file_gone(s);
}

static int file_keys(simai_store *s, const char *prefix, struct simai_keylist *l)
{
    char key[SIMAI_MAX_KEY_BYTES + 1];
    size_t np = strlen(prefix);
    struct dirent *de;
    int rc = SIMAI_OK, fd = dup(F(s)->values);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return simai_file_fail(s->url, "cannot list keys");
    }
    rewinddir(d);
    while (!rc && (de = readdir(d))) {
        size_t len = strlen(de->d_name), n;
        if (de->d_name[0] == '.' || (len > 4 && !strcmp(de->d_name + len - 4, ".key")))
            continue;
        if (de->d_name[0] == '~') {
            char keyname[sizeof de->d_name + 8];
            ssize_t got;
            snprintf(keyname, sizeof keyname, "%s.key", de->d_name);
            if ((got = simai_file_read_small(F(s)->values, keyname, key, sizeof key)) < 0)
                continue;
            n = (size_t)got;
        } else /* a file name (at most 255 bytes) decodes to no more bytes */
            n = decode_name(de->d_name, key);
        if (n >= np && !memcmp(key, prefix, np))
            rc = simai_keylist_add(l, key, n);
    }
    closedir(d);
    return rc;
}

static int file_wait(simai_store *s, const char *key, size_t n, double deadline)
{
    struct simai_lookup q = {s, key, n};
    return simai_poll(simai_appeared, &q, deadline);
}

/* file.py destroy: the whole directory; handles see it gone (their directory has no link) */
static int file_destroy(simai_store *s)
{
    char root[PATH_MAX];
    int rc = simai_abspath(strstr(s->url, "://") + 3, root, sizeof root);
    if (rc || (rc = simai_check_private(root)))
        return rc == SIMAI_ERR_NOT_FOUND ? simai_file_gone(s) : rc;
    if (simai_rmtree_at(AT_FDCWD, root) && errno != ENOENT)
        return simai_file_fail(s->url, "cannot remove the store's directory completely");
    return SIMAI_OK;
}

/* --- the table ----------------------------------------------------------------------------- */

static void file_close(simai_store *s)
{
    struct fstore *f = F(s);
    int *fds[] = {&f->root, &f->values, &f->streams, &f->tmp};
    for (size_t i = 0; i < 4; i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    free(f);
}

static const struct simai_backend FILE_BACKEND = {
    .close = file_close,
    .usable = simai_file_gone,
    .put = file_put,
    .get = file_get,
    .exists = file_exists,
    .del = file_del,
    .keys = file_keys,
    .wait = file_wait,
    .append = simai_file_append,
    .stream_get = simai_file_stream_get,
    .stream_info = simai_file_stream_info,
    .stream_close = simai_file_stream_close,
    .stream_create = simai_file_stream_create,
    .stream_delete = simai_file_stream_delete,
    .destroy = file_destroy,
    .position = simai_file_position,
    .set_position = simai_file_set_position,
};

int simai_file_open(simai_store *s)
{
    const char *path = strstr(s->url, "://") + 3;
    char root[PATH_MAX];
    static const char *const subs[] = {"values", "streams", "tmp"};
    struct fstore *f;
    int rc;
    if (!*path)
        return simai_fail(SIMAI_ERR_INVALID, "file store URL '%s' names no directory: use "
                          "file:///path", s->url);
    if ((rc = simai_abspath(path, root, sizeof root)) || (rc = simai_private_dir(root)))
        return rc;
    if (!(f = malloc(sizeof *f)))
        return simai_fail(SIMAI_ERR_NOMEM, "out of memory opening %s", s->url);
    f->values = f->streams = f->tmp = -1;
    s->impl = f;
    s->ops = &FILE_BACKEND;
    if ((f->root = open(root, DIRFLAGS)) < 0) {
        rc = simai_file_fail(s->url, "cannot open the store");
        free(f);
        return rc;
    }
    for (int i = 0; i < 3; i++) {
        int *fd = i == 0 ? &f->values : i == 1 ? &f->streams : &f->tmp;
        if ((mkdirat(f->root, subs[i], 0700) && errno != EEXIST) ||
            (*fd = openat(f->root, subs[i], DIRFLAGS)) < 0) {
            rc = simai_file_fail(s->url, "cannot open the store");
            file_close(s);
            return rc;
        }
    }
    return SIMAI_OK;
}

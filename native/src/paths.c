/* local:// URLs and private directories, as local.py's local_root and private.py decide. */
#define _GNU_SOURCE
#include "paths.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

void simai_owner_name(uid_t uid, char *out, size_t cap)
{
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (!getpwuid_r(uid, &pw, buf, sizeof buf, &found) && found)
        snprintf(out, cap, "%s (uid %u)", pw.pw_name, (unsigned)uid);
    else
        snprintf(out, cap, "uid %u", (unsigned)uid);
}

/* os.path.abspath: made absolute against the working directory, then normalized lexically
 * ("." and ".." parts and repeated slashes go; "//" at the start stays, as POSIX allows). */
int simai_abspath(const char *path, char *out, size_t cap)
{
    char joined[PATH_MAX * 2], *parts[PATH_MAX], *save = NULL, *tok;
    size_t nparts = 0, len;
    int lead = 0;
    if (path[0] == '/')
        snprintf(joined, sizeof joined, "%s", path);
    else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            return simai_fail(SIMAI_ERR_IO, "cannot find the working directory: %s",
                              strerror(errno));
        snprintf(joined, sizeof joined, "%s/%s", cwd, path);
    }
    if (joined[0] == '/' && joined[1] == '/' && joined[2] != '/')
        lead = 1;
    for (tok = strtok_r(joined, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (!strcmp(tok, "."))
            continue;
        if (!strcmp(tok, "..")) {
            if (nparts)
                nparts--;
            continue;
        }
        parts[nparts++] = tok;
    }
    len = (size_t)snprintf(out, cap, "%s", lead ? "//" : "/");
    for (size_t i = 0; i < nparts && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "/" : "", parts[i]);
    if (len >= cap)
        return simai_fail(SIMAI_ERR_INVALID, "path %s is too long", path);
    return SIMAI_OK;
}

/* os.makedirs(path, exist_ok=True) */
static int makedirs(const char *path)
{
    char buf[PATH_MAX];
    struct stat st;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return simai_fail(SIMAI_ERR_INVALID, "path %s is too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST)
            return simai_fail(SIMAI_ERR_IO, "cannot make %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST)
        return simai_fail(SIMAI_ERR_IO, "cannot make %s: %s", buf, strerror(errno));
    if (stat(buf, &st) || !S_ISDIR(st.st_mode))
        return simai_fail(SIMAI_ERR_IO, "cannot make %s: it is not a directory", buf);
    return SIMAI_OK;
}

/* private.py's check_private */
static int check_private(const char *path, const struct stat *st)
{
    char who[300], me[300];
    if (S_ISLNK(st->st_mode))
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s is a symlink; simai keeps its data only in real directories", path);
    if (!S_ISDIR(st->st_mode))
        return simai_fail(SIMAI_ERR_PERMISSION, "%s is not a directory", path);
    if (st->st_uid != geteuid()) {
        simai_owner_name(st->st_uid, who, sizeof who);
        simai_owner_name(geteuid(), me, sizeof me);
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s belongs to %s, not to you (%s): simai does not use a directory "
                          "another user made; choose another name or path",
                          path, who, me);
    }
    if (st->st_mode & 022)
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s can be written by other users (mode %04o); make it private "
                          "(chmod 700 %s) or choose another path",
                          path, (unsigned)(st->st_mode & 07777), path);
    return SIMAI_OK;
}

int simai_check_private(const char *path)
{
    struct stat st;
    if (lstat(path, &st))
        return errno == ENOENT ? SIMAI_ERR_NOT_FOUND
                               : simai_fail(SIMAI_ERR_IO, "cannot open %s: %s", path,
                                            strerror(errno));
    return check_private(path, &st);
}

int simai_rmtree_at(int dir, const char *name)
{
    struct dirent *de;
    DIR *d;
    int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOTDIR || errno == ELOOP ? unlinkat(dir, name, 0) : -1;
    if (!(d = fdopendir(fd))) {
        close(fd);
        return -1;
    }
    while ((de = readdir(d))) /* what cannot go makes the rmdir below fail */
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            unlinkat(fd, de->d_name, 0) && (errno == EISDIR || errno == EPERM))
            simai_rmtree_at(fd, de->d_name);
    closedir(d);
    return unlinkat(dir, name, AT_REMOVEDIR);
}

int simai_private_dir(const char *path)
{
    char parent[PATH_MAX];
    struct stat st, up;
    int rc = simai_abspath(path, parent, sizeof parent);
    if (rc)
        return rc;
    *strrchr(parent, '/') = 0; /* dirname; "/x" gives "" here */
    if (!*parent)
        strcpy(parent, "/");
    if (lstat(path, &st)) {
        if (errno != ENOENT)
            return simai_fail(SIMAI_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        if ((rc = makedirs(parent)))
            return rc;
        if (mkdir(path, 0700) && errno != EEXIST) /* made by someone else meanwhile: checked */
            return simai_fail(SIMAI_ERR_IO, "cannot make %s: %s", path, strerror(errno));
        if (lstat(path, &st))
            return simai_fail(SIMAI_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    if ((rc = check_private(path, &st)))
        return rc;
    if (stat(parent, &up))
        return simai_fail(SIMAI_ERR_IO, "cannot open %s: %s", parent, strerror(errno));
    if ((up.st_mode & 002) && !(up.st_mode & S_ISVTX))
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s can be written by every user and is not sticky, so anyone could "
                          "put another directory in place of %s; choose a path in a directory "
                          "of yours",
                          parent, path);
    if (st.st_mode & 077) /* never chmod a directory simai did not make: it may be shared */
        return simai_fail(SIMAI_ERR_PERMISSION,
                          "%s can be read by other users (mode %04o) and simai keeps what it "
                          "stores private: make it private (chmod 700 %s) or name a directory "
                          "that does not exist yet (simai makes it, mode 0700)",
                          path, (unsigned)(st.st_mode & 07777), path);
    return SIMAI_OK;
}

/* os.path.join(a, b) for a relative b */
static int join(char *out, size_t cap, const char *a, const char *b)
{
    size_t n = strlen(a);
    const char *sep = (n == 0 || a[n - 1] == '/') ? "" : "/";
    if ((size_t)snprintf(out, cap, "%s%s%s", a, sep, b) >= cap)
        return simai_fail(SIMAI_ERR_INVALID, "path %s%s%s is too long", a, sep, b);
    return SIMAI_OK;
}

int simai_local_root(const char *url, char *out, size_t cap)
{
    const char *rest = strstr(url, "://"), *shm;
    char base[PATH_MAX], name[64];
    int rc;
    rest += 3; /* the caller checked the scheme */
    if (rest[0] == '/') {
        if ((size_t)snprintf(out, cap, "%s", rest) >= cap)
            return simai_fail(SIMAI_ERR_INVALID, "path %s is too long", rest);
        return simai_private_dir(out);
    }
    if (!*rest || strchr(rest, '/') || !strcmp(rest, ".") || !strcmp(rest, ".."))
        return simai_fail(SIMAI_ERR_INVALID,
                          "local store URL '%s': use local://NAME or local:///absolute/dir", url);
    shm = getenv("SIMAI_SHM_DIR");
    snprintf(name, sizeof name, "simai-%u", (unsigned)geteuid());
    if ((rc = join(base, sizeof base, shm ? shm : "/dev/shm", name)))
        return rc;
    if ((rc = simai_private_dir(base)) || (rc = join(out, cap, base, rest)))
        return rc;
    return simai_private_dir(out);
}

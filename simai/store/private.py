"""Directories that belong to this user alone: stores, run directories, server dumps and logs.

simai creates them with mode 0700 and refuses one it did not make for this user: a directory
another user owns, or one that others can write, could hand this user's processes someone
else's bytes or collect theirs. A symlink in its place is refused too, so the path is the
directory itself.
"""

from __future__ import annotations

import os
import pwd
import stat


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_private(path: str | os.PathLike[str], st: os.stat_result | None = None) -> None:
    """PermissionError unless `path` is a directory (not a symlink) owned by this user that no
    other user can write."""
    path = os.fspath(path)
    st = st or os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise PermissionError(f"{path} is a symlink; simai keeps its data only in real directories")
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} belongs to {owner_name(st.st_uid)}, not to you ({owner_name(os.geteuid())}): "
            "simai does not use a directory another user made; choose another name or path"
        )
    if st.st_mode & 0o022:
        raise PermissionError(
            f"{path} can be written by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"make it private (chmod 700 {path}) or choose another path"
        )


def private_dir(path: str | os.PathLike[str]) -> str:
    """`path` as a private directory: made with mode 0700 (and its missing parents) if it does
    not exist, else checked with `check_private` and refused if others may read it (simai
    never changes the mode of a directory it did not make: that could be a shared project
    directory, a home, or /). Its parent must not be writable by every user unless it is
    sticky (as /tmp and /dev/shm are). Returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # made by someone else meanwhile: check theirs
            pass
        st = os.lstat(path)
    check_private(path, st)
    up = os.stat(parent)
    if up.st_mode & 0o002 and not up.st_mode & stat.S_ISVTX:  # anyone could swap `path`
        raise PermissionError(
            f"{parent} can be written by every user and is not sticky, so anyone could put "
            f"another directory in place of {path}; choose a path in a directory of yours"
        )
    if st.st_mode & 0o077:
        raise PermissionError(
            f"{path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o}) and simai "
            f"keeps what it stores private: make it private (chmod 700 {path}) or name a "
            "directory that does not exist yet (simai makes it, mode 0700)"
        )
    return path


def private_file(path: str | os.PathLike[str]) -> None:
    """Make an existing file readable and writable by its owner only (mode 0600); a symlink in
    its place is an OSError, never followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)

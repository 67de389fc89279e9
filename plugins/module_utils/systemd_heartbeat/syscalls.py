# SPDX-License-Identifier: MIT
"""What the heartbeat asks of the operating system beyond the built-in posix module's calls.

The modules every tick runs call `posix` (built into the interpreter, already loaded when it
starts) rather than `os`: under `python3 -IS` nothing has imported os yet, and importing it
(posixpath, genericpath, _collections_abc, os itself) costs 0.8 ms of CPU, a twelfth of a tick
at a dozen units (BENCHMARKS.md). os adds nothing the heartbeat needs but what is here: path
joining, existence checks and the environment as text. Paths are str throughout (the state
directory, the allowlist); the heartbeat is Linux-only, so posix is always there.
"""
import posix

S_IFMT, S_IFLNK, S_IFREG = 0o170000, 0o120000, 0o100000


def join(directory: str, name: str) -> str:
    """os.path.join for two str parts: an absolute name stands alone."""
    if name.startswith("/") or not directory:
        return name
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def file_type(call, path: str) -> "int | None":
    """The S_IFMT bits of what call (posix.stat or posix.lstat) finds at path; None if nothing."""
    try:
        return call(path).st_mode & S_IFMT
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None


def lexists(path: str) -> bool:
    """Whether anything is at path, a dangling symlink included (os.path.lexists)."""
    return file_type(posix.lstat, path) is not None


def exists(path: str) -> bool:
    """Whether path leads to something, following symlinks (os.path.exists)."""
    return file_type(posix.stat, path) is not None


def islink(path: str) -> bool:
    return file_type(posix.lstat, path) == S_IFLNK


def is_regular(mode: int) -> bool:
    return mode & S_IFMT == S_IFREG


def environment() -> "dict[str, str]":
    """The process's environment as text, decoded as os.environ decodes it (the filesystem
    encoding: UTF-8 under systemd, the locale's elsewhere)."""
    import sys

    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {key.decode(encoding, errors): value.decode(encoding, errors) for key, value in posix.environ.items()}


def getenv(name: str) -> str:
    """One variable of the environment as text ("" when unset), decoded as environment() does."""
    import sys

    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return posix.environ.get(name.encode(encoding, errors), b"").decode(encoding, errors)

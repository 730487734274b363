"""The disk cache of compiled kernels (docs/design.md §8).

This module owns the cache directory: entries, their keys, the small memo files that
make a key cheap to compute, and what happens when the directory misbehaves.

An entry is a set of named blobs (e.g. "source", "ptx", "cubin", "meta") under one key,
a directory `<root>/<key[:2]>/<key>` holding one file `entry.bin`:

    magic (8 bytes) | sha256 of the payload (32 bytes) | payload

where the payload is the blobs, each a length-prefixed name and length-prefixed bytes.
A write goes to a temporary file in the same directory, then `os.replace`s into place:
readers see the old entry or the new one, never half of one, so concurrent processes
compiling the same kernel are safe (the last rename wins, and both wrote the same
bytes). Files are created like any file the user writes (mode 0o666 minus the umask;
directories 0o777 minus the umask), so a cache a group shares is readable by the group.

Failures never fail a compile:

* a read that finds a bad magic, a short file, a checksum mismatch, an `entry.bin` that
  is a directory, or a path component that is a file treats the entry as missing and
  discards it, so it is rebuilt (callers that find well-formed but unusable contents
  call `discard` themselves);
* a write that fails (read-only directory, a cache path under a file, a full disk: any
  `OSError`) leaves the compile uncached and warns once per process and cache root
  with a `CacheWarning` that names the directory and how to choose another one.

The key (`cache_key`) hashes everything the compiled code depends on: the frontend IR
text (the kernel after its compile-time Python ran, constants included), the
specialization facts, the target, tilelang's version and a hash of its own source
files (any compiler change invalidates everything), and the backend compiler's
version. Hashing the sources costs milliseconds, which a warm compile in a fresh
process cannot afford, so the hash is memoized in `<root>/memo/` with every source
file's size and modification time (what Python's own bytecode cache trusts): checking
it is one `stat` per file, no read. The root is `TILELANG_CACHE_DIR`, else
`~/.cache/tilelang`.

`tilelang cache ls|clear` (`entries`, `clear`) touch only what this module creates:
the two-hex-digit shard directories and `memo/`, never other files in the root.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilelang.version import __version__

MAGIC = b"TLCACHE1"
ENTRY = "entry.bin"
MEMO = "memo"
PACKAGE = Path(__file__).resolve().parent.parent

_SHARD = re.compile(r"[0-9a-f]{2}")
#: The memo of this package's source hash (one per installed copy of tilelang).
_SOURCE_MEMO = "source-" + hashlib.sha256(str(PACKAGE).encode()).hexdigest()[:16]
_WARNED_ROOTS: set[str] = set()


class CacheWarning(UserWarning):
    """The disk cache cannot be used; kernels still compile, without caching."""


def cache_root() -> Path:
    configured = os.environ.get("TILELANG_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "tilelang"


# --------------------------------------------------------------------------- keys


@functools.cache
def source_hash() -> str:
    """A hash of every Python source file of the tilelang package, memoized on disk
    with each file's size and modification time: checking the memo is one `stat` per
    file, no read and no directory listing. A file added since does not invalidate it:
    a file changes what the compiler does only once another imports it (imports are
    static; tests/test_architecture.py reads them), and that one's stamp changes."""
    cache = DiskCache()
    memo = cache.read_memo(_SOURCE_MEMO)
    if memo is not None and _stamps_hold(memo):
        return memo["hash"]
    files = _source_stamps()
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(relative.encode())
        digest.update((PACKAGE / relative).read_bytes())
    content = digest.hexdigest()
    cache.write_memo(_SOURCE_MEMO, {"files": files, "hash": content})
    return content


def _source_stamps() -> dict[str, list[int]]:
    """Every .py file of the package: relative path -> [size, mtime in ns]."""
    root = str(PACKAGE) + os.sep
    files: dict[str, list[int]] = {}
    pending = [str(PACKAGE)]
    while pending:
        with os.scandir(pending.pop()) as scan:
            for item in scan:
                if item.is_dir(follow_symlinks=False):
                    if item.name != "__pycache__":
                        pending.append(item.path)
                elif item.name.endswith(".py"):
                    stat = item.stat()
                    relative = item.path[len(root) :].replace(os.sep, "/")
                    files[relative] = [stat.st_size, stat.st_mtime_ns]
    return files


def _stamps_hold(memo: dict[str, Any]) -> bool:
    """Whether every file the memo lists is unchanged (any doubt: no)."""
    base = str(PACKAGE) + os.sep  # strings, not Paths: this runs in every fresh process
    try:
        if not isinstance(memo["hash"], str):
            return False
        for relative, (size, mtime) in memo["files"].items():
            stat = os.stat(base + relative)
            if stat.st_size != size or stat.st_mtime_ns != mtime:
                return False
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return False
    return True


def cache_key(*parts: str) -> str:
    """The key of an entry: a hash of its parts and of this tilelang's source."""
    digest = hashlib.sha256()
    for part in (__version__, source_hash(), *parts):
        encoded = part.encode()
        digest.update(struct.pack("<Q", len(encoded)))
        digest.update(encoded)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class CacheEntry:
    """One entry as `tilelang cache ls` shows it; `problem` says why it cannot be used
    (unreadable, damaged, not a directory, ...), None when it is fine."""

    key: str
    path: Path
    size: int
    names: tuple[str, ...]
    problem: str | None = None


@dataclass(frozen=True)
class Cleared:
    """What `DiskCache.clear` did: entries removed, and each path it could not remove
    with the reason."""

    removed: int
    failed: tuple[tuple[Path, str], ...]


class DiskCache:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> dict[str, bytes] | None:
        """The blobs stored under `key`, or None when absent or damaged (then discarded)."""
        path = self._dir(key) / ENTRY
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except (IsADirectoryError, NotADirectoryError):
            # Garbage where the entry should be: remove it so the rebuild can be stored.
            self.discard(key)
            return None
        except OSError:
            return None  # unreadable (permissions): rebuild; the write says if it fails
        blobs = _decode(data)
        if blobs is None:
            self.discard(key)
        return blobs

    def put(self, key: str, blobs: dict[str, bytes]) -> bool:
        """Stores `blobs` under `key` atomically (temporary file, then rename). Returns
        False, after warning once per process and root, when the cache cannot be written."""
        try:
            self._put(key, blobs)
        except OSError as error:
            warn_unwritable(self.root, error)
            return False
        return True

    def discard(self, key: str) -> None:
        """Removes the entry of `key`, whatever is there, as far as possible."""
        folder = self._dir(key)
        _remove(folder)
        if not folder.parent.is_dir():
            _remove(folder.parent)  # a file where the shard directory should be

    def _put(self, key: str, blobs: dict[str, bytes]) -> None:
        folder = self._dir(key)
        self._make_folder(folder)
        temporary = _write_new(folder, _encode(blobs))
        try:
            _replace(temporary, folder / ENTRY)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def _make_folder(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            if not self.root.is_dir():
                raise  # the root itself is not a directory: nothing of ours to repair
            # A file where the shard or the entry directory belongs: garbage, remove it.
            for part in (folder.parent, folder):
                if part.exists() and not part.is_dir():
                    part.unlink()
            folder.mkdir(parents=True, exist_ok=True)

    # -- memo files: small facts that are slow to recompute (source hash, NVRTC version)

    def read_memo(self, name: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.root, MEMO, name + ".json"), "rb") as memo:
                data = json.loads(memo.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_memo(self, name: str, data: dict[str, Any]) -> None:
        folder = self.root / MEMO
        # A memo only saves time: a failure to write it is silent (an unwritable cache
        # is reported once, by the first entry that cannot be stored).
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            temporary = _write_new(folder, json.dumps(data).encode())
            try:
                os.replace(temporary, folder / f"{name}.json")
            except OSError:
                temporary.unlink()
                raise

    # -- listing and clearing

    def entries(self) -> list[CacheEntry]:
        """Every entry, readable or not (an unreadable root raises `OSError`)."""
        if not self.root.is_dir():
            return []
        found = []
        for shard in sorted(self.root.iterdir()):
            if not _SHARD.fullmatch(shard.name):
                continue  # not ours (memo/, or a file someone else put there)
            if not shard.is_dir():
                found.append(_problem(shard, "not a directory"))
                continue
            try:
                folders = sorted(shard.iterdir())
            except OSError as error:
                found.append(_problem(shard, f"unreadable ({_reason(error)})"))
                continue
            found.extend(_inspect(folder) for folder in folders)
        return found

    def clear(self) -> Cleared:
        """Removes every entry and the memo files; reports what could not be removed."""
        removed = 0
        failed: list[tuple[Path, str]] = []
        for entry in self.entries():
            target = entry.path.parent if entry.path.name == ENTRY else entry.path
            problems = _remove(target)
            failed.extend(problems)
            removed += not problems
        shards = [p for p in _children(self.root) if _SHARD.fullmatch(p.name) and p.is_dir()]
        for shard in shards:
            with contextlib.suppress(OSError):
                shard.rmdir()  # empty now, unless something in it could not be removed
        failed.extend(_remove(self.root / MEMO))
        return Cleared(removed, tuple(failed))


def warn_unwritable(root: Path, error: OSError) -> None:
    """The one warning (per process and cache root) that the cache cannot be written."""
    if str(root) in _WARNED_ROOTS:
        return
    _WARNED_ROOTS.add(str(root))
    warnings.warn(
        f"tilelang cannot write its kernel cache in {root} ({_reason(error)}); kernels are "
        "compiled without caching. Set TILELANG_CACHE_DIR to a writable directory (or make "
        "this one writable) to cache them.",
        CacheWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------- files


def _write_new(folder: Path, data: bytes) -> Path:
    """A new uniquely named temporary file in `folder` holding `data`."""
    path = folder / f".tmp-{os.getpid()}-{secrets.token_hex(8)}"
    # 0o666 and the process's umask, as for any file the user creates (mkstemp would
    # make it 0o600, unreadable for the rest of a group sharing the cache).
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def _replace(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:
        if not (target.is_dir() and not target.is_symlink()):
            raise
        # A directory where the entry file belongs (garbage): remove it, then retry.
        _remove(target)
        os.replace(source, target)


def _remove(path: Path) -> list[tuple[Path, str]]:
    """Removes a file or a directory tree; returns what could not be removed, and why."""
    try:
        if not (path.is_dir() and not path.is_symlink()):
            path.unlink()
            return []
        failed: list[tuple[Path, str]] = []
        for child in path.iterdir():
            failed.extend(_remove(child))
        if not failed:  # else rmdir fails too, for a reason already reported
            path.rmdir()
        return failed
    except FileNotFoundError:
        return []
    except OSError as error:
        return [(path, _reason(error))]


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _inspect(folder: Path) -> CacheEntry:
    """The listing of one entry directory, whatever state it is in."""
    if not folder.is_dir():
        return _problem(folder, "not a directory")
    path = folder / ENTRY
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _problem(folder, f"incomplete (no {ENTRY})")
    except IsADirectoryError:
        return _problem(path, f"{ENTRY} is a directory")
    except OSError as error:
        return _problem(path, f"unreadable ({_reason(error)})")
    blobs = _decode(data)
    if blobs is None:
        return CacheEntry(folder.name, path, len(data), (), "damaged (bad magic or checksum)")
    return CacheEntry(folder.name, path, len(data), tuple(sorted(blobs)))


def _problem(path: Path, problem: str) -> CacheEntry:
    key = path.parent.name if path.name == ENTRY else path.name
    try:
        size = path.stat().st_size if path.is_file() else 0
    except OSError:
        size = 0
    return CacheEntry(key, path, size, (), problem)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


# --------------------------------------------------------------------------- the format


def _encode(blobs: dict[str, bytes]) -> bytes:
    payload = bytearray()
    for name in sorted(blobs):
        encoded = name.encode()
        payload += struct.pack("<I", len(encoded)) + encoded
        payload += struct.pack("<Q", len(blobs[name])) + blobs[name]
    return MAGIC + hashlib.sha256(payload).digest() + bytes(payload)


def _decode(data: bytes) -> dict[str, bytes] | None:
    if len(data) < len(MAGIC) + 32 or not data.startswith(MAGIC):
        return None
    checksum, payload = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != checksum:
        return None
    blobs: dict[str, bytes] = {}
    at = 0
    try:
        while at < len(payload):
            (name_length,) = struct.unpack_from("<I", payload, at)
            at += 4
            name = payload[at : at + name_length].decode()
            at += name_length
            (length,) = struct.unpack_from("<Q", payload, at)
            at += 8
            if at + length > len(payload):
                return None
            blobs[name] = payload[at : at + length]
            at += length
    except (struct.error, UnicodeDecodeError):
        return None  # a well-checksummed payload this code did not write
    return blobs

"""The disk cache of compiled kernels (DESIGN.md §8).

An entry is a set of named blobs (e.g. "source", "ptx", "cubin", "meta") under one key,
a directory `<root>/<key[:2]>/<key>` holding one file `entry.bin`:

    magic (8 bytes) | sha256 of the payload (32 bytes) | payload

where the payload is the blobs, each a length-prefixed name and length-prefixed bytes.
A write goes to a temporary file in the same directory, then `os.replace`s into place:
readers see the old entry or the new one, never half of one, so concurrent processes
compiling the same kernel are safe (the last rename wins, and both wrote the same
bytes). A read that finds a bad magic, a short file or a checksum mismatch treats the
entry as missing (and removes it), so a corrupt or partial entry is rebuilt.

The key (`cache_key`) hashes everything the compiled code depends on: the frontend IR
text (the kernel after its compile-time Python ran, constants included), the
specialization facts, the target, tilelang's version and a hash of its own source
files (any compiler change invalidates everything), and the backend compiler's
version. The root is `TILELANG_CACHE_DIR`, else `~/.cache/tilelang`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tilelang.version import __version__

MAGIC = b"TLCACHE1"
ENTRY = "entry.bin"


def cache_root() -> Path:
    configured = os.environ.get("TILELANG_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "tilelang"


@functools.cache
def source_hash() -> str:
    """A hash of every Python source file of the tilelang package."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(*parts: str) -> str:
    """The key of an entry: a hash of its parts and of this tilelang's source."""
    digest = hashlib.sha256()
    for part in (__version__, source_hash(), *parts):
        encoded = part.encode()
        digest.update(struct.pack("<Q", len(encoded)))
        digest.update(encoded)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    size: int
    names: tuple[str, ...]


class DiskCache:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> dict[str, bytes] | None:
        """The blobs stored under `key`, or None when absent or damaged (then removed)."""
        path = self._dir(key) / ENTRY
        try:
            data = path.read_bytes()
        except OSError:
            return None
        blobs = _decode(data)
        if blobs is None:
            with contextlib.suppress(OSError):
                path.unlink()
        return blobs

    def put(self, key: str, blobs: dict[str, bytes]) -> None:
        """Stores `blobs` under `key` atomically (temporary file, then rename)."""
        folder = self._dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(_encode(blobs))
            os.replace(temporary, folder / ENTRY)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def entries(self) -> list[CacheEntry]:
        found = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.glob(f"*/*/{ENTRY}")):
            blobs = _decode(path.read_bytes())
            names = tuple(sorted(blobs)) if blobs is not None else ("<damaged>",)
            found.append(CacheEntry(path.parent.name, path, path.stat().st_size, names))
        return found

    def clear(self) -> int:
        """Removes every entry; returns how many there were."""
        entries = self.entries()
        for entry in entries:
            entry.path.unlink(missing_ok=True)
            for folder in (entry.path.parent, entry.path.parent.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        return len(entries)


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
    while at < len(payload):
        (name_length,) = struct.unpack_from("<I", payload, at)
        at += 4
        name = payload[at : at + name_length].decode()
        at += name_length
        (length,) = struct.unpack_from("<Q", payload, at)
        at += 8
        blobs[name] = payload[at : at + length]
        at += length
    return blobs

"""One disk record per evaluated config, in tilelang's disk cache.

A record's key hashes the kernel's source, the tuning key's values, the fixed
constexprs, the method ("model:sm_90", "cpu", "gpu:sm_90a:<device>") and that one
config (with tilelang's version and source hash, as every cache key does), never the
config list: a config added later is the only one evaluated. A record is JSON: the
config, "ok" or "pruned", the reason, the seconds (predicted or measured).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from tilelang.runtime.cache import DiskCache, cache_key

BLOB = "autotune.json"


def kernel_hash(fn: Any, warps: Any) -> str:
    """A hash of the kernel function's source text and its warps setting."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = fn.__qualname__
    return hashlib.sha256(f"{text}\nwarps={warps!r}".encode()).hexdigest()


def record_key(kernel: str, key: str, fixed: str, method: str, config: dict[str, Any]) -> str:
    return cache_key("autotune", kernel, key, fixed, method, canonical(config))


def canonical(config: dict[str, Any]) -> str:
    return json.dumps({k: repr(v) for k, v in sorted(config.items())})


def load(cache: DiskCache, key: str) -> dict[str, Any] | None:
    blobs = cache.get(key)
    if blobs is None or BLOB not in blobs:
        return None
    try:
        record = json.loads(blobs[BLOB])
    except ValueError:
        cache.discard(key)
        return None
    if not isinstance(record, dict) or record.get("status") not in ("ok", "pruned"):
        cache.discard(key)
        return None
    return record


def store(cache: DiskCache, key: str, record: dict[str, Any]) -> None:
    cache.put(key, {BLOB: json.dumps(record, default=repr).encode()})


def describe(blobs: dict[str, bytes]) -> str | None:
    """One line for `tilelang cache ls` when `blobs` is a tuning record, else None."""
    if BLOB not in blobs:
        return None
    try:
        r = json.loads(blobs[BLOB])
        outcome = (
            f"pruned: {r['reason']}" if r["status"] == "pruned" else f"{r['seconds'] * 1e6:.3f} us"
        )
        return f"autotune {r['kernel']} {r['key']} ({r['method']}) {r['config']}: {outcome}"
    except (ValueError, KeyError, TypeError):
        return "autotune record (unreadable)"

"""One disk record per evaluated config, in tilelang's disk cache.

A record's key hashes the kernel's source, the warps and min_blocks it launches with at
that config (`launch_text`), the tuning key's values, the fixed constexprs, the method
("model:sm_90", "cpu", "gpu:sm_90a:<device>") and that one config (with tilelang's
version and source hash, as every cache key does), never the config list: a config
added later is the only one evaluated. A record is JSON: the config, "ok" or "pruned",
the reason, the seconds (predicted or measured).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from tilelang.runtime.cache import DiskCache, cache_key

BLOB = "autotune.json"


def kernel_hash(fn: Any) -> str:
    """A hash of the kernel function's source text (its launch settings are each
    record's own: `launch_text`)."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = fn.__qualname__
    return hashlib.sha256(text.encode()).hexdigest()


def launch_text(kernel: Any, constexprs: dict[str, Any]) -> str:
    """The warps and min_blocks `kernel` (a `Kernel`) launches with at `constexprs` (a
    config with the fixed constexprs). A setting given as a rule (a function of the
    constexprs) is keyed by what it gives for them, not by the function: a lambda's
    repr holds its address, new in every process, while what it gives is what the
    build depends on; so a record goes stale exactly when the rule gives this config
    other values."""
    try:
        constants = kernel.constants(constexprs)
    except Exception as error:  # the config's compile is pruned with this error
        return f"constexprs: {type(error).__name__}: {error}"
    parts = []
    for name in ("warps", "min_blocks"):
        given = getattr(kernel, name)
        try:
            value = given(**constants) if callable(given) else given
        except Exception as error:  # as above: the compile raises it too
            value = f"{type(error).__name__}: {error}"
        parts.append(f"{name}={value!r}")
    return " ".join(parts)


def record_key(
    kernel: str,
    key: str,
    fixed: str,
    method: str,
    config: dict[str, Any],
    launch: str | None = None,
) -> str:
    """The record's cache key; `launch`: the config's `launch_text` (a tuner whose
    kernels' launch settings are in `kernel` already leaves it out)."""
    parts = ("autotune", kernel, key, fixed, method, canonical(config))
    return cache_key(*parts) if launch is None else cache_key(*parts, launch)


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

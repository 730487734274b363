"""Packed batches of the Mamba-2 kernels (`ssd_chunk_scan`, `causal_conv1d`): the host
checks of `seq_idx` (int32 [batch, L], the id of the sequence each step belongs to,
non-decreasing along L), `cu_seqlens` (int32 [n_seq + 1], sequence i being steps
cu_seqlens[i] ..< cu_seqlens[i + 1] of the one batch row) and `dt_limit`, each error
naming the parameter, what was expected and what was given. Values are read only from
host arrays: a device tensor's values would need a copy and a sync, so there only
shapes and dtypes are checked (as `flash_attention`'s cu_seqlens)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tilelang import dtypes

from .common import check


def seq_ids(seq_idx: Any, nb: int, length: int) -> None:
    """seq_idx: int32 [batch, L]; a host array's ids must not decrease along L."""
    check(seq_idx, "seq_idx", (nb, length), (dtypes.i32,))
    if not isinstance(seq_idx, np.ndarray) or length < 2:
        return
    falls = np.argwhere(np.diff(seq_idx.astype(np.int64), axis=1) < 0)
    if len(falls):
        b, t = (int(v) for v in falls[0])
        raise ValueError(
            f"seq_idx must not decrease along L (the packed sequences in order), got "
            f"seq_idx[{b}, {t}] = {int(seq_idx[b, t])} then seq_idx[{b}, {t + 1}] = "
            f"{int(seq_idx[b, t + 1])}"
        )


def sequence_offsets(cu_seqlens: Any, seq_idx: Any, nb: int, length: int) -> int:
    """The number of sequences cu_seqlens (int32 [n_seq + 1]) delimits, after checking
    it: batch 1, seq_idx given, and for host arrays offsets rising from 0 to L and
    seq_idx numbering the sequences they delimit (step t of sequence i has id i: the
    kernel finds a sequence's end by its id)."""
    (entries,), _ = check(cu_seqlens, "cu_seqlens", (None,), (dtypes.i32,), ("n_seq + 1",))
    if entries < 1:
        raise ValueError("cu_seqlens must have n_seq + 1 >= 1 entries, got 0")
    if nb != 1:
        raise ValueError(
            f"cu_seqlens needs batch 1 (the sequences packed along L of one row), got batch = {nb}"
        )
    if seq_idx is None:
        raise ValueError(
            "cu_seqlens needs seq_idx (int32 [1, L], the id of each step's sequence: the "
            "scan restarts where it changes), got None"
        )
    if not isinstance(cu_seqlens, np.ndarray):
        return entries - 1
    offsets = cu_seqlens.astype(np.int64)
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != length:
        raise ValueError(
            f"cu_seqlens must rise from 0 to L = {length} without decreasing, got "
            f"{offsets.tolist()}"
        )
    if isinstance(seq_idx, np.ndarray):
        expected = np.repeat(np.arange(entries - 1), np.diff(offsets))
        wrong = np.flatnonzero(seq_idx[0] != expected)
        if len(wrong):
            t = int(wrong[0])
            raise ValueError(
                f"seq_idx must number the sequences cu_seqlens delimits (step t of "
                f"sequence i has id i), got seq_idx[0, {t}] = {int(seq_idx[0, t])} where "
                f"step {t} is in sequence {int(expected[t])}"
            )
    return entries - 1


def step_limits(dt_limit: Any) -> tuple[float, float] | None:
    """dt_limit as (lo, hi) floats, or None (no clamp): a pair of real numbers, lo <= hi
    (either may be infinite, neither NaN)."""
    if dt_limit is None:
        return None
    pair = tuple(dt_limit) if isinstance(dt_limit, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(_real(v) for v in pair):
        raise ValueError(f"dt_limit must be None or a pair (lo, hi) of numbers, got {dt_limit!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"dt_limit must be (lo, hi) with lo <= hi and no NaN, got {dt_limit!r}")
    return lo, hi


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )

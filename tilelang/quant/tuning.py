"""Tile choice for `tilelang.quant.matmul` by the autotuner: candidates and rankings.

`choose` (in `choice`) is a hand-written rule; its tile is best on the shapes it was
written for, not on every (M, K, N) and architecture. This module ranks a small set of
`Choice`s per call key instead, with the autotuner's rules (`tilelang.tuning`):

* The candidates (`candidates`): `choose`'s tile FIRST, then a few neighbours over what
  the kernels accept: BM (16, 32, 64, 128 rows; 4 or 8 warps), BK (64 or 128, dividing
  the packing's K tile), split-K (none, half or twice the rule's). BN is the packing's
  column block (128): the packed codes are laid out per 128 columns. A candidate whose
  tile does not read the packed codes as they are (`operands.reads_as`) is dropped.
* When (`tilelang.tuning.library.method_for`): `TILELANG_AUTOTUNE=off` or
  ``tune=False``: the first candidate, `choose`'s tile, without evaluating anything
  (today's behaviour). A device call (``tune=None``,
  the default) measures; a host call uses `choose`'s tile unless asked
  (``tune=True`` or ``"model"``), because tuning GPU tiles by running the CPU backend
  would measure the wrong machine.
* How: "gpu:<arch>": the median of CUDA-event timings of the whole call (both kernels
  of a split-K call), the L2 flushed before each, on the call's own tensors (the kernels
  only write `out` and the workspace, which the call writes again after). "model:<arch>":
  the sum of the static performance reports' predicted times of the call's launches,
  compiled for <arch> with the launch's size and value facts: a prediction, said so in
  the decision's notes. Before either, a candidate that fails to compile, spills, needs
  more shared memory or registers than the target has, or cannot launch is pruned,
  with the reason. The least seconds wins; ties go to the earlier candidate.
* Records: one disk record per (the kernels' source, the key M, K, N, the weight's
  kernel constants and value facts, the bias, the method, one candidate), as
  `tl.autotune` keeps them (`tilelang.tuning.records`): a candidate added later is the
  only one evaluated. Decisions are remembered in memory per the same key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tilelang.runtime import gpu
from tilelang.runtime.cache import DiskCache
from tilelang.runtime.launch_facts import size_facts
from tilelang.target import target as find_target
from tilelang.tuning import (
    Decision,
    Progress,
    Trial,
    decision_text,
    error_reason,
    machine_errors,
    records,
    resource_problem,
)
from tilelang.tuning.library import method_for

from . import kernels
from .choice import (
    DEFAULT_ARCH,
    MIN_SLICE_TILES,
    Choice,
    choose,
    kernel_calls,
    sm_count,
    swaps_operands,
    zero_group_of,
)
from .operands import BLOCK_N, Operands, cached, operands, reads_as
from .weight import QuantizedWeight

NAME = "quant_matmul"
#: GPU timing: launches before timing, and timed launches (the median is kept).
WARMUP, REP = 2, 10

#: A launcher for GPU timing: runs the calls of one candidate on the call's tensors.
Launcher = Callable[[Operands, list], None]


# ------------------------------------------------------------------------- candidates


def _even_split(tiles: int, split: int) -> int:
    """`split` slices of `tiles` k-tiles, lowered so that no slice is empty."""
    split = max(1, min(split, tiles))
    return -(-tiles // -(-tiles // split))


def candidates(
    m: int,
    k: int,
    n: int,
    arch: str = DEFAULT_ARCH,
    packing: Any = None,
    zero_group: int | None = None,
) -> list[Choice]:
    """`choose`'s tile, then its neighbours (module docstring), deduplicated, each one
    reading codes packed by `packing` (None: every tile reads them), with zero points in
    groups of `zero_group` rows (None: none)."""
    first = choose(m, k, n, arch, packing, zero_group)
    pack_k = packing.tile[0] if packing is not None else 128
    tiles = lambda bk: -(-k // bk)  # noqa: E731
    options: list[Choice] = [first]
    split = first.split_k
    if first.path != "gemm" or split > 1:  # the gemm tile splits only when blocks are few
        for s in (1, max(1, split // 2), 2 * split):
            s = min(s, max(1, tiles(first.bk) // MIN_SLICE_TILES)) if s > split else s
            options.append(dataclasses.replace(first, split_k=_even_split(tiles(first.bk), s)))
    if first.path == "gemm":
        for bm, bk, warps in ((128, 64, 8), (64, 128, 8), (64, 64, 4), (128, 128, 8)):
            swap = first.swap and swaps_operands(BLOCK_N, warps)
            options.append(Choice("gemm", bm, BLOCK_N, bk, warps, first.stages, 1, swap))
    else:
        if first.bk != 64:  # half the k-tile, the same number of slices
            options.append(dataclasses.replace(first, bk=64, split_k=_even_split(tiles(64), split)))
        if m > first.bm and first.bm < 64:  # one row block instead of several
            bm, warps = (32, 4) if m <= 32 else (64, 8)
            blocks = -(-m // bm) * -(-n // BLOCK_N)
            s = 1 if blocks >= sm_count(arch) else split
            split_k = _even_split(tiles(first.bk), s)
            options.append(dataclasses.replace(first, bm=bm, warps=warps, split_k=split_k))
    result: list[Choice] = []
    for option in options:
        fits = option.bk <= pack_k and pack_k % option.bk == 0
        if packing is not None and fits:
            fits = reads_as(packing, option.bk, option.bm, option.warps)
        if fits and option not in result:
            result.append(option)
    return result


# ------------------------------------------------------------------------- deciding


def config_of(choice: Choice) -> dict[str, Any]:
    """A choice as the autotuner's config (what records and reports name)."""
    return {
        "path": choice.path,
        "BM": choice.bm,
        "BN": choice.bn,
        "BK": choice.bk,
        "WARPS": choice.warps,
        "STAGES": choice.stages,
        "SPLIT_K": choice.split_k,
        "SWAP": choice.swap,
    }


def choice_of(config: dict[str, Any]) -> Choice:
    return Choice(
        config["path"],
        config["BM"],
        config["BN"],
        config["BK"],
        config["WARPS"],
        config["STAGES"],
        config["SPLIT_K"],
        config["SWAP"],
    )


_SOURCE_HASH: list[str] = []
#: Decisions by (method, key, fixed constants, candidates): warm calls look up here.
_DECISIONS: dict[tuple, Decision] = {}
#: Every (key, config) evaluated in this process (cache hits are not): for tests/tools.
evaluated: list[tuple[tuple, dict[str, Any]]] = []


def _kernels_hash() -> str:
    """The source of the kernels and of the launch builder (`choice.kernel_calls`)."""
    if not _SOURCE_HASH:
        text = inspect.getsource(kernels) + inspect.getsource(kernel_calls)
        _SOURCE_HASH.append(hashlib.sha256(text.encode()).hexdigest())
    return _SOURCE_HASH[0]


def decide(
    qw: QuantizedWeight,
    m: int,
    *,
    method: str = "model",
    arch: str = DEFAULT_ARCH,
    x_dtype: Any = "f16",
    bias: bool = False,
    choices: Sequence[Choice] | None = None,
    launch: Launcher | None = None,
    stream: int = 0,
    progress: bool = True,
) -> Decision:
    """The ranking of `choices` (default: `candidates`) for x [m, K] @ qw: "model"
    ranks by the static report for `arch` (no GPU needed); "gpu" times each choice on
    this machine's GPU with `launch` on `stream` (module docstring; needed unless this
    process decided the key already). `.config` is the chosen candidate's config
    (`choice_of` makes it a `Choice`), `.notes` say when it is a prediction,
    `report(decision)` is its text."""
    if method not in ("model", "gpu"):
        raise ValueError(f"method must be 'model' or 'gpu', got {method!r}")
    ops = operands(qw, x_dtype)
    k, n = qw.shape
    if choices is None:
        choices = candidates(m, k, n, arch, ops.packing, zero_group_of(ops))
    choices = list(choices)
    if not choices or not all(isinstance(c, Choice) for c in choices):
        raise TypeError(
            f"choices must be a non-empty list of tilelang.quant.Choice, got {choices!r}"
        )
    target = find_target(gpu.device_arch() if method == "gpu" else arch)
    method_text = f"{method}:{target.name}"
    key = (("M", m), ("K", k), ("N", n))
    constants = {name: ops.constexprs[name] for name in sorted(ops.constexprs)}
    fixed = records.canonical({**constants, "HAS_BIAS": bias, "facts": ops.facts})
    memo = (method_text, key, fixed, tuple(choices))
    if memo in _DECISIONS:
        return _DECISIONS[memo]
    if method == "gpu" and launch is None:
        raise ValueError("method 'gpu' times the call's launches: pass launch= (the call's)")
    run = _Run(ops, m, bias, target, method_text, key, fixed, (launch, stream), progress)
    decision = _DECISIONS[memo] = run.decide(choices)
    return decision


def report(decision: Decision) -> str:
    """The decision as text: every candidate, its seconds or why it was pruned."""
    return decision_text(NAME, decision)


def tuned_choice(
    qw: QuantizedWeight,
    m: int,
    x_dtype: Any,
    arch: str,
    has_bias: bool,
    method: str,
    launch: Launcher | None = None,
    stream: int = 0,
) -> Choice:
    """The choice a call runs: `decide`'s over `candidates` (what `matmul` asks),
    remembered on the weight, so that a warm call costs one dict lookup."""
    memo = ("tuned choice", m, repr(x_dtype), arch, has_bias, method)
    return cached(qw, memo, lambda: _tuned(qw, m, x_dtype, arch, has_bias, method, launch, stream))


def _tuned(qw, m, x_dtype, arch, has_bias, method, launch, stream) -> Choice:
    decision = decide(
        qw,
        m,
        method=method,
        arch=arch,
        x_dtype=x_dtype,
        bias=has_bias,
        launch=launch,
        stream=stream,
        progress=False,  # a library call is quiet; `decide` itself reports progress
    )
    return choice_of(decision.config)


class _Run:
    """Evaluates the candidates without a disk record for one key and method."""

    def __init__(self, ops, m, bias, target, method, key, fixed, launch, progress) -> None:
        self.ops, self.m, self.bias, self.target = ops, m, bias, target
        self.method, self.key, self.fixed = method, key, fixed
        self.launch, self.stream = launch
        self.progress = progress
        self.cache = DiskCache()

    def decide(self, choices: list[Choice]) -> Decision:
        trials: list[Trial] = []
        found = [self._load(c) for c in choices]
        fresh = sum(t is None for t in found)
        progress = Progress(NAME, self.key, fresh, self.progress) if fresh else None
        for choice, trial in zip(choices, found, strict=True):
            config = config_of(choice)
            if trial is None:
                trial = self._evaluate(choice)
                evaluated.append((self.key, config))
                record = {
                    **trial.to_record(),
                    "kernel": NAME,
                    "key": " ".join(f"{k}={v}" for k, v in self.key),
                    "method": self.method,
                    "config": " ".join(f"{k}={v}" for k, v in config.items()),
                }
                records.store(self.cache, self._record_key(choice), record)
                progress.step(config, trial)
            trials.append(trial)
        if progress is not None:
            progress.close()
        ok = [i for i, t in enumerate(trials) if t.status == "ok"]
        if not ok:
            reasons = "\n".join(f"  {t.config}: {t.reason}" for t in trials)
            raise RuntimeError(
                f"{NAME} tuning at {self.key}: every candidate was pruned\n{reasons}"
            )
        best = min(ok, key=lambda i: (trials[i].seconds, i))
        notes = []
        if self.method.startswith("model:"):
            notes.append(
                f"no GPU measured: ranked by the static performance report's predicted time "
                f"on {self.target.name} (a prediction, not a measurement)"
            )
        return Decision(self.key, self.method, trials, best, notes)

    def _record_key(self, choice: Choice) -> str:
        return records.record_key(
            _kernels_hash(), repr(self.key), self.fixed, self.method, config_of(choice)
        )

    def _load(self, choice: Choice) -> Trial | None:
        record = records.load(self.cache, self._record_key(choice))
        if record is None:
            return None
        return Trial(
            config_of(choice),
            record["status"],
            record.get("reason", ""),
            record.get("seconds"),
            cached=True,
        )

    def _evaluate(self, choice: Choice) -> Trial:
        config = config_of(choice)
        calls = kernel_calls(self.ops, self.m, choice, self.bias)
        predicted = 0.0
        for call in calls:
            facts = {**size_facts(call.sizes), **call.values}
            try:
                with warnings.catch_warnings():
                    # A candidate's compile warnings (spills, replicated operands) are
                    # what pruning and ranking weigh: the decision reports them.
                    warnings.simplefilter("ignore")
                    compiled = call.kernel.compile(
                        assume=facts, target=self.target, **call.constexprs
                    )
            except Exception as error:
                if isinstance(error, machine_errors()):
                    raise  # the machine lacks a tool: nothing to record about the tile
                return Trial(config, "pruned", error_reason(error))
            problem = resource_problem(compiled, self.target)
            if problem:
                return Trial(config, "pruned", problem)
            if self.method.startswith("model:"):
                # Deferred: only a ranking by the static model loads it.
                from tilelang.runtime.perf import PerfError

                try:
                    predicted += float(compiled.perf(**call.sizes).predicted_seconds)
                except PerfError as error:
                    return Trial(config, "pruned", f"cannot launch: {error_reason(error)}")
        if self.method.startswith("model:"):
            return Trial(config, "ok", seconds=predicted)
        return Trial(config, "ok", seconds=self._time(calls))

    def _time(self, calls: list) -> float:
        # Deferred: only a process that tunes on a GPU loads the event timing.
        from tilelang.tuning.gpu_timing import time_launches

        return time_launches(lambda: self.launch(self.ops, calls), self.stream, WARMUP, REP)


__all__ = [
    "candidates",
    "choice_of",
    "config_of",
    "decide",
    "method_for",
    "report",
    "tuned_choice",
]

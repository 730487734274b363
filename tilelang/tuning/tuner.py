"""`tl.autotune`: a kernel whose constexprs are chosen per call shape.

`@tl.autotune(configs=[{...}, ...], key=["M", "N", "K"])` over a `@tl.kernel`, or
`tl.autotune(kernel, space={"BM": [16, 32], "BK": [64, 128]})` (the product of the
space, in the order given), returns an `Autotuned`, called like the kernel. A call binds
its arguments with the kernel's own argument checks (`Specialization.arguments`), reads
the key's sizes and scalars, and looks the best config up: in memory, then in the disk
cache (one record per config, `records.py`), evaluating only the configs without a
record. Then it calls the kernel with the chosen constexprs.

Evaluating, per the call's device and `tune_on`:
- every method compiles first; a config that fails (`RegisterBudgetError`, any
  compile error) is pruned with the error as its reason. For a GPU target the
  compiles run in a process pool (fork), whose builds land in the disk cache, so the
  parent's compile of the same config is a hit; a config that spills, whose shared
  memory exceeds the target, or which cannot have one block resident is pruned too;
- "gpu" (a call on device arrays): the median of `rep` launches timed with CUDA events,
  the L2 flushed before each (`gpu_timing.py`);
- "model" (a host call, the default): the static performance report's
  `predicted_seconds` for `target` (default sm_90) at the call's sizes: a prediction,
  and the report says so;
- "cpu" (a host call with `tune_on="cpu"`): the median of `rep` runs on the CPU
  backend, on copies of the tensors the kernel stores to.
The chosen config has the least seconds; ties go to the earlier config.
`TILELANG_AUTOTUNE=off` skips tuning and calls the first config.

A tuner of its own (the quantized matmul's, `tilelang.quant.tuning`) builds on the same
pieces, exported by `tilelang.tuning`: `Trial` and `Decision` (what it records and
reports), `decision_text` (the report), `Progress`, and the pruning rules
`machine_errors`, `error_reason` and `resource_problem`.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilelang.kernel import Kernel, _imported, _on_gpu
from tilelang.runtime import gpu
from tilelang.runtime.cache import DiskCache
from tilelang.runtime.launch_facts import size_facts
from tilelang.spill_verdict import RegisterSpillWarning
from tilelang.target import HARDWARE, Hardware
from tilelang.target import target as find_target
from tilelang.tuning import records

METHODS = ("model", "cpu")


@functools.cache
def machine_errors() -> tuple[type[BaseException], ...]:
    """The errors of the machine, not of a config (NVRTC or the SASS reader missing, out
    of memory), for `isinstance`: a tuner lets them propagate and records nothing."""
    # Deferred: `import tilelang` need not load the SASS reader for the autotuner.
    from tilelang.runtime.nvrtc import NvrtcUnavailableError
    from tilelang.runtime.sass import SassUnavailableError

    return (NvrtcUnavailableError, SassUnavailableError, ImportError, OSError, MemoryError)


@dataclass
class Trial:
    """One config evaluated for one key: "ok" with its seconds, or "pruned" with why."""

    config: dict[str, Any]
    status: str
    reason: str = ""
    seconds: float | None = None
    cached: bool = False

    def to_record(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "seconds": self.seconds}


@dataclass
class Decision:
    """The configs evaluated for one key (`trials`), the chosen one's index (`best`), how
    they were ranked (`method`) and what the report should add (`notes`)."""

    key: tuple[tuple[str, Any], ...]
    method: str
    trials: list[Trial]
    best: int
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[self.best].config


class Autotuned:
    """A kernel with tuned constexprs; call it like the kernel. `.report(key)` is the
    text of a decision, `.decisions` all of them, `.evaluated` every (key, config) this
    object evaluated (cache hits are not evaluated)."""

    def __init__(
        self,
        kernel: Kernel,
        configs: Sequence[Mapping[str, Any]] | None = None,
        key: Iterable[str] = (),
        *,
        space: Mapping[str, Iterable[Any]] | None = None,
        target: str = "sm_90",
        tune_on: str = "model",
        warmup: int = 2,
        rep: int = 10,
        jobs: int | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(kernel, Kernel):
            raise TypeError(
                f"autotune: expected a @tl.kernel, got {type(kernel).__name__} {kernel!r}"
            )
        self.kernel = kernel
        self.name = kernel.fn.__name__
        self.configs = _configs(self.name, kernel, configs, space)
        self.key = _key_names(self.name, key)
        if tune_on not in METHODS:
            raise ValueError(
                f"autotune({self.name}): tune_on should be one of {', '.join(METHODS)}, "
                f"got {tune_on!r}"
            )
        self.target = find_target(target)
        if not self.target.is_gpu:
            raise ValueError(
                f"autotune({self.name}): target is the GPU whose static report ranks "
                f"configs on a host call (e.g. 'sm_90'), got {target!r}"
            )
        if not (isinstance(warmup, int) and isinstance(rep, int) and warmup >= 0 and rep >= 1):
            raise ValueError(
                f"autotune({self.name}): warmup should be an int >= 0 and rep an int >= 1, "
                f"got warmup={warmup!r}, rep={rep!r}"
            )
        self.tune_on = tune_on
        self.warmup, self.rep = warmup, rep
        self.jobs = jobs
        self.progress = progress
        self.decisions: dict[tuple, Decision] = {}
        self.evaluated: list[tuple[tuple, dict[str, Any]]] = []
        self._kernel_hash = records.kernel_hash(kernel.fn)
        self._key_checked = False
        self._fast: dict[tuple, Decision] = {}
        functools.update_wrapper(self, kernel.fn)
        try:
            spec = kernel.specialization(**self.configs[0])
        except Exception:  # a required constexpr comes with the call: the key is checked then
            return
        self._check_key(spec)

    # -- calling -------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if os.environ.get("TILELANG_AUTOTUNE", "").lower() == "off":
            self._split(args, kwargs)
            return self.kernel(*args, **kwargs, **self.configs[0])
        config = self._choose(*self._split(args, kwargs))
        return self.kernel(*args, **kwargs, **config)

    def best(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The config a call with these arguments runs (tuning it if needed)."""
        return dict(self._choose(*self._split(args, kwargs)))

    def _split(self, args: tuple, kwargs: dict) -> tuple[dict, dict]:
        values, fixed = self.kernel._split_arguments(args, kwargs)
        tuned = sorted(set(fixed) & set(self.configs[0]))
        if tuned:
            raise TypeError(
                f"{self.name}(): {', '.join(tuned)} is chosen by the autotuner; "
                "call the kernel itself to set it"
            )
        return values, fixed

    def _choose(self, values: dict, fixed: dict) -> dict[str, Any]:
        # A warm call skips the binding: the same shapes, scalars and device give the
        # same key (sizes are functions of the shapes), so the same decision.
        fast = _fast_key(values, fixed)
        found = self._fast.get(fast) if fast is not None else None
        if found is not None:
            return found.config
        decision = self._decide(values, fixed)
        if fast is not None:
            self._fast[fast] = decision
        return decision.config

    def _decide(self, values: dict, fixed: dict) -> Decision:
        spec = self.kernel.specialization(**self.configs[0], **fixed)
        arguments = _imported(values, spec)
        on_gpu = any(_on_gpu(arguments[name]) for name in spec.tensors)
        if on_gpu:
            bound = spec.arguments.bind_device(arguments)
            method = f"gpu:{gpu.device_arch()}"
        else:
            bound = spec.arguments.bind(arguments)
            method = "cpu" if self.tune_on == "cpu" else f"model:{self.target.name}"
        if not self._key_checked:
            self._check_key(spec)
        named = {**bound.sizes, **bound.scalars}
        key = tuple((name, named[name]) for name in self.key)
        memo = (key, tuple(sorted((k, repr(v)) for k, v in fixed.items())), method)
        decision = self.decisions.get(memo)
        if decision is None:
            regions = None
            if on_gpu:
                regions = [
                    (bound.pointers[n], gpu.device_array(arguments[n]).nbytes) for n in bound.stored
                ]
            run = _Run(self, values, fixed, bound, method, key, regions)
            decision = self.decisions[memo] = run.decide()
        return decision

    def report(self, key: Mapping[str, Any] | Sequence[Any] | None = None) -> str:
        """The text of the decision for `key` (a dict of key names, or their values in
        order), or of every decision so far when `key` is None."""
        chosen = list(self.decisions.values())
        if key is not None:
            wanted = (
                dict(key) if isinstance(key, Mapping) else dict(zip(self.key, key, strict=True))
            )
            chosen = [d for d in chosen if dict(d.key) == wanted]
            if not chosen:
                known = "; ".join(_key_text(d.key) for d in self.decisions.values()) or "none"
                raise KeyError(
                    f"autotune({self.name}): no decision for {wanted} (decided: {known})"
                )
        return (
            "\n\n".join(decision_text(self.name, d) for d in chosen)
            or f"autotune({self.name}): nothing tuned yet"
        )

    def _check_key(self, spec) -> None:
        names = [s.name for s in spec.function.sizes]
        names += [p.name for p in spec.function.params if p.name not in spec.tensors]
        unknown = [k for k in self.key if k not in names]
        if unknown:
            raise ValueError(
                f"autotune({self.name}): key {', '.join(map(repr, unknown))} is not a size or "
                f"scalar parameter of {self.name}() (its sizes and scalars: {', '.join(names) or 'none'})"
            )
        self._key_checked = True

    def __repr__(self) -> str:
        return f"<tilelang.autotune {self.name}: {len(self.configs)} configs, key {list(self.key)}>"


def _fast_key(values: dict[str, Any], fixed: dict[str, Any]) -> tuple | None:
    """Per argument its shape and whether it is on a GPU (a scalar: its value), with the
    fixed constexprs; None when an argument has no plain shape."""
    parts = []
    for name, value in values.items():
        if isinstance(value, (bool, int, float, np.number)):
            parts.append((name, type(value).__name__, value))
            continue
        shape = getattr(value, "shape", None)
        if not isinstance(shape, tuple):
            return None
        parts.append((name, shape, _on_gpu(value)))
    return (tuple(parts), tuple(sorted((k, repr(v)) for k, v in fixed.items())))


# --------------------------------------------------------------------------- one tuning


class _Run:
    """Evaluates the configs without a disk record for one key and method."""

    def __init__(self, tuner: Autotuned, values, fixed, bound, method: str, key, regions) -> None:
        self.regions = regions  # on a GPU: what the kernel writes, kept while timing
        self.tuner, self.values, self.fixed, self.bound = tuner, values, fixed, bound
        self.method, self.key = method, key
        self.facts = size_facts(bound.sizes)
        self.launch = {**bound.sizes, **bound.scalars}
        self.cache = DiskCache()
        fixed_text = records.canonical(fixed)
        key_text = repr(key)
        self.record_keys = [
            records.record_key(
                tuner._kernel_hash,
                key_text,
                fixed_text,
                method,
                c,
                records.launch_text(tuner.kernel, {**c, **fixed}),
            )
            for c in tuner.configs
        ]

    def decide(self) -> Decision:
        tuner = self.tuner
        trials: list[Trial | None] = []
        for config, rkey in zip(tuner.configs, self.record_keys, strict=True):
            record = records.load(self.cache, rkey)
            if record is None:
                trials.append(None)
            else:
                trials.append(
                    Trial(
                        dict(config),
                        record["status"],
                        record.get("reason", ""),
                        record.get("seconds"),
                        cached=True,
                    )
                )
        missing = [i for i, t in enumerate(trials) if t is None]
        if missing and self.regions is not None:
            # Deferred: only a process that tunes on a GPU loads the event timing.
            from tilelang.tuning.gpu_timing import Preserved

            with Preserved(self.regions, self._stream()):
                self._evaluate_missing(trials, missing)
        elif missing:
            self._evaluate_missing(trials, missing)
        done = [t for t in trials if t is not None]
        ok = [i for i, t in enumerate(done) if t.status == "ok"]
        if not ok:
            reasons = "\n".join(f"  {_config_text(t.config)}: {t.reason}" for t in done)
            raise RuntimeError(
                f"autotune({tuner.name}) {_key_text(self.key)}: every config was pruned\n{reasons}"
            )
        best = min(ok, key=lambda i: (done[i].seconds, i))
        notes = []
        if self.method.startswith("model:"):
            notes.append(
                f"no GPU measured: ranked by the static performance report's predicted time "
                f"on {self.tuner.target.name} (a prediction, not a measurement)"
            )
        return Decision(self.key, self.method, done, best, notes)

    def _evaluate_missing(self, trials: list[Trial | None], missing: list[int]) -> None:
        tuner = self.tuner
        failures = self._precompile([tuner.configs[i] for i in missing])
        progress = Progress(tuner.name, self.key, len(missing), tuner.progress)
        for i, failure in zip(missing, failures, strict=True):
            config = dict(tuner.configs[i])
            trial = self._evaluate(config, failure)
            tuner.evaluated.append((self.key, config))
            record = {
                **trial.to_record(),
                "kernel": tuner.name,
                "key": _key_text(self.key),
                "method": self.method,
                "config": _config_text(config),
            }
            records.store(self.cache, self.record_keys[i], record)
            trials[i] = trial
            progress.step(config, trial)
        progress.close()

    # -- compiling -----------------------------------------------------------------------

    def _gpu_target(self):
        if self.method.startswith("gpu:"):
            return find_target(self.method.split(":", 1)[1])
        if self.method.startswith("model:"):
            return self.tuner.target
        return None

    def _precompile(self, configs: list[dict[str, Any]]) -> list[str | None]:
        """Compiles GPU builds in a process pool so that the parent's compiles are disk
        hits; per config, the error that pruned it in a worker (None when it compiled)."""
        # Deferred: only a tuning that compiles for a GPU starts processes.
        import concurrent.futures
        import multiprocessing

        target = self._gpu_target()
        jobs = self.tuner.jobs or min(len(configs), os.cpu_count() or 1)
        if (
            target is None
            or jobs < 2
            or len(configs) < 2
            or "fork" not in multiprocessing.get_all_start_methods()
        ):
            return [None] * len(configs)
        token = id(self)
        _WORK[token] = (self.tuner.kernel, self.fixed, self.facts, target.name)
        try:
            context = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
                return list(pool.map(_compile_in_worker, [token] * len(configs), configs))
        except (OSError, concurrent.futures.process.BrokenProcessPool):
            return [None] * len(configs)  # no pool here: the parent compiles each config
        finally:
            del _WORK[token]

    def _evaluate(self, config: dict[str, Any], failure: str | None) -> Trial:
        if failure is not None:
            return Trial(config, "pruned", failure)
        kernel = self.tuner.kernel
        target = self._gpu_target()
        try:
            compiled = _compile_quietly(
                kernel, assume=self.facts, target=target or "cpu", **config, **self.fixed
            )
        except Exception as error:
            if isinstance(error, machine_errors()):
                raise  # any other compile error prunes the config, with its reason
            return Trial(config, "pruned", error_reason(error))
        if target is not None:
            pruned = resource_problem(compiled, target)
            if pruned:
                return Trial(config, "pruned", pruned)
        if self.method.startswith("model:"):
            # Deferred: only a tuning without a GPU loads the static model.
            from tilelang.runtime.perf import PerfError

            try:
                report = compiled.perf(**self.launch)
            except PerfError as error:  # no block fits an SM, or a launch the kernel refuses
                return Trial(config, "pruned", f"cannot launch: {error_reason(error)}")
            return Trial(config, "ok", seconds=float(report.predicted_seconds))
        if self.method == "cpu":
            return Trial(config, "ok", seconds=self._time_cpu(config))
        return Trial(config, "ok", seconds=self._time_gpu(config))

    # -- timing --------------------------------------------------------------------------

    def _time_cpu(self, config: dict[str, Any]) -> float:
        values = dict(self.values)
        for name in self.bound.stored:
            values[name] = np.array(values[name], copy=True)
        kernel, runs = self.tuner.kernel, []
        for i in range(self.tuner.warmup + self.tuner.rep):
            start = time.perf_counter()
            kernel(**values, **config, **self.fixed)
            if i >= self.tuner.warmup:
                runs.append(time.perf_counter() - start)
        return float(np.median(runs))

    def _stream(self) -> int:
        return gpu.current_stream([self.values[n] for n in self.bound.pointers])

    def _time_gpu(self, config: dict[str, Any]) -> float:
        # Deferred: only a process that tunes on a GPU loads the event timing.
        from tilelang.tuning.gpu_timing import time_launches

        kernel = self.tuner.kernel
        stream = self._stream()

        def launch() -> None:
            kernel(**self.values, **config, **self.fixed)

        return time_launches(launch, stream, self.tuner.warmup, self.tuner.rep)


#: What the forked workers compile, by token (a fork inherits it; nothing is pickled but
#: the token and the config).
_WORK: dict[int, tuple] = {}


def _compile_quietly(kernel, **arguments: Any):
    """`kernel.compile` without its spill warning: a config that spills is pruned, with
    ptxas's counts as its reason; its warning would only repeat that for a tile the user
    never runs (and a compile worker would print it once more)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegisterSpillWarning)
        return kernel.compile(**arguments)


def _compile_in_worker(token: int, config: dict[str, Any]) -> str | None:
    kernel, fixed, facts, target = _WORK[token]
    try:
        _compile_quietly(kernel, assume=facts, target=target, **config, **fixed)
    except Exception as error:  # reported per config, as in the parent
        if isinstance(error, machine_errors()):
            return None  # the parent compiles it again and raises
        return error_reason(error)
    return None


def resource_problem(compiled, target) -> str:
    """Why a compiled config is pruned before it runs — it spills, its shared memory is
    over `target`'s, or one block's registers do not fit a multiprocessor — or ""."""
    resources = compiled.resources
    if resources.spill_store_bytes or resources.spill_load_bytes:
        return (
            f"spills: {resources.spill_store_bytes} bytes stored, "
            f"{resources.spill_load_bytes} loaded ({resources.registers} registers)"
        )
    shared = max(resources.shared_bytes, compiled.thread.shared_bytes)
    if shared > target.shared_bytes:
        return f"shared memory {shared} bytes over the {target.shared_bytes} of {target.name}"
    threads = compiled.thread.threads
    hardware = HARDWARE.get(target.name)
    per_sm = hardware.registers_per_sm if hardware is not None else Hardware.registers_per_sm
    if resources.registers * threads > per_sm:
        return f"{resources.registers} registers x {threads} threads do not fit one SM's {per_sm}"
    return ""


def error_reason(error: BaseException) -> str:
    """The error's class and first sentence: a pruned `Trial`'s reason (the report keeps
    reasons to a line)."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    end = first.find(". ")
    return f"{type(error).__name__}: {first[: end + 1] if end >= 0 else first}"


# --------------------------------------------------------------------------- configs


def _configs(name: str, kernel: Kernel, configs, space) -> list[dict[str, Any]]:
    if configs is not None and space is not None:
        raise TypeError(f"autotune({name}): give configs or space, not both")
    if space is not None:
        if not isinstance(space, Mapping) or not space:
            raise ValueError(
                f"autotune({name}): space should be a non-empty dict of constexpr name -> "
                f"values, got {space!r}"
            )
        names = list(space)
        choices = []
        for n in names:
            options = list(space[n]) if not isinstance(space[n], (str, bytes)) else None
            if not options:
                raise ValueError(
                    f"autotune({name}): space[{n!r}] should be a non-empty list, got {space[n]!r}"
                )
            choices.append(options)
        configs = [dict(zip(names, values, strict=True)) for values in itertools.product(*choices)]
    if configs is None or isinstance(configs, Mapping) or len(configs) == 0:
        raise ValueError(
            f"autotune({name}): configs should be a non-empty list of dicts of constexpr "
            f"values (or space=...), got {configs!r}"
        )
    declared = list(kernel._constexprs)
    result = []
    first_names = None
    for i, config in enumerate(configs):
        if not isinstance(config, Mapping):
            raise TypeError(
                f"autotune({name}): config {i} should be a dict, got {type(config).__name__} {config!r}"
            )
        unknown = [k for k in config if k not in declared]
        if unknown:
            raise TypeError(
                f"autotune({name}): config {i} {dict(config)} names {', '.join(unknown)}, "
                f"not a tl.constexpr parameter of {name}() (its constexpr parameters: "
                f"{', '.join(declared) or 'none'})"
            )
        if first_names is None:
            first_names = set(config)
        elif set(config) != first_names:
            raise ValueError(
                f"autotune({name}): config {i} {dict(config)} sets {sorted(config)}, config 0 "
                f"sets {sorted(first_names)}; every config should set the same constexprs"
            )
        result.append(dict(config))
    return result


def _key_names(name: str, key) -> tuple[str, ...]:
    if isinstance(key, str):
        key = [key]
    names = tuple(key)
    if not all(isinstance(k, str) for k in names):
        raise TypeError(
            f"autotune({name}): key should be a list of size or scalar names, got {key!r}"
        )
    return names


# --------------------------------------------------------------------------- text


def _config_text(config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items()) or "(defaults)"


def _key_text(key) -> str:
    return " ".join(f"{k}={v}" for k, v in key) or "(no key)"


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.3f} us"


def decision_text(name: str, decision: Decision) -> str:
    """The decision of the tuner `name` as text: its key and method, notes, the chosen
    config, and a line per trial (its seconds, or why it was pruned)."""
    what = "predicted" if decision.method.startswith("model:") else "measured"
    lines = [
        f"==== autotune {name} at {_key_text(decision.key)} ({decision.method}) ====",
        *(f"  {note}" for note in decision.notes),
        f"  chosen: {_config_text(decision.config)}",
        f"  {'config':<32} {'status':<8} {what:>14}  reason / source",
    ]
    for i, trial in enumerate(decision.trials):
        mark = "*" if i == decision.best else " "
        source = "cached" if trial.cached else "evaluated"
        detail = trial.reason if trial.status == "pruned" else source
        lines.append(
            f"{mark} {_config_text(trial.config):<32} {trial.status:<8} {_seconds(trial.seconds):>14}  {detail}"
        )
    return "\n".join(lines)


class Progress:
    """Progress of the tuner `name` through `total` configs at `key` (`step` each, then
    `close`), when `enabled`: tqdm when it is importable and stderr is a terminal; else
    one line per config."""

    def __init__(self, name: str, key, total: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.prefix = f"autotune {name} {_key_text(key)}"
        self.total, self.done, self.bar = total, 0, None
        if self.enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm  # optional: never a dependency
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=self.prefix, file=sys.stderr, leave=False)

    def step(self, config: dict[str, Any], trial: Trial) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            outcome = (
                f"pruned ({trial.reason})" if trial.status == "pruned" else _seconds(trial.seconds)
            )
            print(
                f"{self.prefix}: [{self.done}/{self.total}] {_config_text(config)}: {outcome}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def autotune(
    kernel: Kernel | None = None,
    *,
    configs: Sequence[Mapping[str, Any]] | None = None,
    key: Iterable[str] = (),
    space: Mapping[str, Iterable[Any]] | None = None,
    **options: Any,
) -> Autotuned | Callable[[Kernel], Autotuned]:
    """`@tl.autotune(configs=[...], key=[...])` over a `@tl.kernel`, or
    `tl.autotune(kernel, space={...}, key=[...])`. Options: `target` (the GPU whose
    static report ranks configs on a host call, default "sm_90"), `tune_on` ("model" or
    "cpu" for host calls), `warmup`, `rep`, `jobs` (compile processes), `progress`."""
    if kernel is None:
        return lambda k: Autotuned(k, configs, key, space=space, **options)
    return Autotuned(kernel, configs, key, space=space, **options)

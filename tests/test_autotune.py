"""tl.autotune (docs/design.md §8, issue 13 part 4): pruning with reasons, the choice
rule recomputed from the static reports, per-config disk records (a second tuner hits,
an added config is the only one evaluated), results equal to the kernel's, progress
lines without tqdm, and errors that name what was expected and given."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

import tilelang as tl
from tilelang.target import target as find_target
from tilelang.tuning import tuner as tuner_module

SMALL = dict(BM=16, BN=16, BK=16)
MEDIUM = dict(BM=32, BN=32, BK=32)
HUGE = dict(BM=128, BN=256, BK=64)  # over the register budget


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache for the module: GPU builds are shared between tests, and each test
    tunes its own shapes so that its records are its own."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("TILELANG_CACHE_DIR", str(folder))
        patch.delenv("TILELANG_AUTOTUNE", raising=False)
        yield folder


@pytest.fixture
def matmul(example, cache_dir):
    return example("matmul")


def operands(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    return a, b, np.zeros((m, n), np.float16)


def facts(**sizes):
    """The size facts a call derives, recomputed: the largest power of two up to 128."""
    return {
        n: max(d for d in (1, 2, 4, 8, 16, 32, 64, 128) if s % d == 0) for n, s in sizes.items()
    }


def test_prunes_with_reasons_and_picks_the_least_predicted_time(matmul):
    tuned = tl.autotune(configs=[SMALL, MEDIUM, HUGE], key=["M", "N", "K"])(matmul.matmul)
    a, b, c = operands(64, 48, 32)
    out = tuned(a, b, c)
    (decision,) = tuned.decisions.values()
    assert decision.method == "model:sm_90"
    statuses = {tuple(t.config.values()): (t.status, t.reason) for t in decision.trials}
    assert statuses[tuple(HUGE.values())][0] == "pruned"
    assert statuses[tuple(HUGE.values())][1].startswith(
        "RegisterBudgetError: kernel matmul needs about"
    )
    # The documented rule, recomputed: the least predicted time on sm_90, ties to the first.
    predicted = []
    for config in (SMALL, MEDIUM):
        compiled = matmul.matmul.compile(assume=facts(M=64, N=48, K=32), target="sm_90", **config)
        predicted.append(compiled.perf(M=64, N=48, K=32).predicted_seconds)
    expected = (SMALL, MEDIUM)[min(range(2), key=lambda i: (predicted[i], i))]
    assert decision.config == expected
    assert [t.seconds for t in decision.trials[:2]] == pytest.approx(predicted)
    # The result is the kernel's own at the chosen config, bit for bit, and right.
    direct = matmul.matmul(a, b, np.zeros_like(c), **expected)
    np.testing.assert_array_equal(out, direct)
    reference = matmul.reference(a, b).astype(np.float32)
    error = np.abs(out.astype(np.float32) - reference).max() / np.abs(reference).max()
    assert error <= matmul.tolerance(32)
    text = tuned.report({"M": 64, "N": 48, "K": 32})
    assert "predicted time on sm_90 (a prediction, not a measurement)" in text
    assert (
        "RegisterBudgetError" in text and f"chosen: {tuner_module._config_text(expected)}" in text
    )
    assert tuned.report([64, 48, 32]) == text


def test_a_second_tuner_reads_every_config_from_disk(matmul):
    configs = [SMALL, MEDIUM, HUGE]
    first = tl.autotune(matmul.matmul, configs=configs, key=["M", "N", "K"])
    first(*operands(32, 32, 64))
    assert len(first.evaluated) == 3
    second = tl.autotune(matmul.matmul, configs=configs, key=["M", "N", "K"])
    second(*operands(32, 32, 64))
    assert second.evaluated == []
    (one,), (two,) = first.decisions.values(), second.decisions.values()
    assert two.config == one.config
    assert all(t.cached for t in two.trials)
    assert [(t.status, t.seconds) for t in two.trials] == [
        (t.status, t.seconds) for t in one.trials
    ]
    # Another key is another tuning.
    second(*operands(64, 32, 64))
    assert len(second.evaluated) == 3


def test_adding_a_config_evaluates_only_that_config(matmul):
    tl.autotune(matmul.matmul, configs=[SMALL, MEDIUM], key=["M", "N", "K"])(*operands(16, 64, 32))
    added = dict(BM=16, BN=32, BK=16)
    grown = tl.autotune(matmul.matmul, configs=[SMALL, added, MEDIUM], key=["M", "N", "K"])
    grown(*operands(16, 64, 32))
    key = (("M", 16), ("N", 64), ("K", 32))
    assert grown.evaluated == [(key, added)]
    (decision,) = grown.decisions.values()
    assert [t.cached for t in decision.trials] == [True, False, True]


def test_shared_memory_over_the_target_is_pruned(matmul):
    compiled = matmul.matmul.compile(assume=facts(M=64, N=64, K=64), target="sm_90", **MEDIUM)
    assert compiled.thread.shared_bytes > 4096
    small = dataclasses.replace(find_target("sm_90"), shared_bytes=4096)
    reason = tl.tuning.resource_problem(compiled, small)
    assert reason == f"shared memory {compiled.thread.shared_bytes} bytes over the 4096 of sm_90"
    assert tl.tuning.resource_problem(compiled, find_target("sm_90")) == ""


def test_progress_is_one_line_per_config_without_tqdm(matmul, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    tuned = tl.autotune(matmul.matmul, configs=[SMALL, HUGE], key=["M"], jobs=1)
    tuned(*operands(48, 16, 16))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("autotune matmul M=48: [1/2] BM=16 BN=16 BK=16: ")
    assert lines[0].endswith(" us")
    assert lines[1].startswith(
        "autotune matmul M=48: [2/2] BM=128 BN=256 BK=64: pruned (RegisterBudgetError"
    )
    tuned(*operands(48, 16, 16))  # decided: no output
    assert capsys.readouterr().err == ""


def test_tuning_on_the_cpu_backend_and_the_off_switch(matmul, monkeypatch):
    tuned = tl.autotune(
        matmul.matmul,
        space={"BM": [16, 32], "BK": [16]},
        key=["M", "N"],
        tune_on="cpu",
        warmup=0,
        rep=1,
        progress=False,
    )
    assert tuned.configs == [dict(BM=16, BK=16), dict(BM=32, BK=16)]
    a, b, c = operands(32, 16, 16, seed=1)
    out = tuned(a, b, c)
    (decision,) = tuned.decisions.values()
    assert decision.method == "cpu" and decision.notes == []
    assert all(t.status == "ok" and t.seconds > 0 for t in decision.trials)
    times = [t.seconds for t in decision.trials]
    assert decision.config == tuned.configs[times.index(min(times))]
    np.testing.assert_array_equal(out, matmul.matmul(a, b, np.zeros_like(c), **decision.config))
    assert out is c  # the caller's output array, written
    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")
    off = tl.autotune(matmul.matmul, configs=[dict(BM=32), dict(BM=16)], key=["M"])
    out = off(a, b, np.zeros_like(c))
    assert off.evaluated == [] and off.decisions == {}
    np.testing.assert_array_equal(out, matmul.matmul(a, b, np.zeros_like(c), BM=32))


def test_errors_name_what_was_expected_and_given(matmul):
    kernel = matmul.matmul
    with pytest.raises(
        ValueError,
        match=r"key 'Q' is not a size or scalar parameter of matmul\(\) \(its sizes and scalars: M, K, N\)",
    ):
        tl.autotune(kernel, configs=[SMALL], key=["M", "Q"])
    with pytest.raises(
        ValueError, match=r"configs should be a non-empty list of dicts .* got \[\]"
    ):
        tl.autotune(kernel, configs=[], key=["M"])
    with pytest.raises(
        TypeError,
        match=r"config 1 \{'BM': 16, 'TILE': 2\} names TILE, not a tl.constexpr parameter of matmul\(\) \(its constexpr parameters: BM, BN, BK\)",
    ):
        tl.autotune(kernel, configs=[dict(BM=16), dict(BM=16, TILE=2)], key=["M"])
    with pytest.raises(
        ValueError, match=r"config 1 .* sets \['BK', 'BM'\], config 0 sets \['BM'\]"
    ):
        tl.autotune(kernel, configs=[dict(BM=16), dict(BM=16, BK=16)], key=["M"])
    with pytest.raises(TypeError, match="give configs or space, not both"):
        tl.autotune(kernel, configs=[SMALL], space={"BM": [16]})
    with pytest.raises(ValueError, match=r"space\['BM'\] should be a non-empty list, got \[\]"):
        tl.autotune(kernel, space={"BM": []})
    with pytest.raises(ValueError, match="tune_on should be one of model, cpu, got 'gpu'"):
        tl.autotune(kernel, configs=[SMALL], tune_on="gpu")
    with pytest.raises(TypeError, match=r"expected a @tl\.kernel, got function"):
        tl.autotune(lambda: None, configs=[SMALL])
    tuned = tl.autotune(kernel, configs=[SMALL], key=["M"])
    with pytest.raises(TypeError, match=r"matmul\(\): BM is chosen by the autotuner"):
        tuned(*operands(16, 16, 16), BM=32)
    with pytest.raises(KeyError, match=r"no decision for \{'M': 7\} \(decided: none\)"):
        tuned.report({"M": 7})


def test_cache_ls_shows_tuning_records(matmul, capsys):
    from tilelang.cli import main

    tl.autotune(matmul.matmul, configs=[SMALL, HUGE], key=["M"], progress=False)(
        *operands(80, 16, 16)
    )
    capsys.readouterr()
    assert main(["cache", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mine = [line for line in lines if "autotune matmul M=80 (model:sm_90)" in line]
    assert len(mine) == 2
    assert any(line.endswith(" us") and "BM=16 BN=16 BK=16" in line for line in mine)
    assert any("BM=128 BN=256 BK=64: pruned: RegisterBudgetError" in line for line in mine)


def test_compiles_run_in_worker_processes_and_the_parent_reads_them_from_disk(matmul):
    tuned = tl.autotune(matmul.matmul, configs=[SMALL, MEDIUM], key=["M"], jobs=2, progress=False)
    assert tuned.best(*operands(24, 40, 24)) in (SMALL, MEDIUM)
    for config in (SMALL, MEDIUM):
        compiled = matmul.matmul.compile(assume=facts(M=24, N=40, K=24), target="sm_90", **config)
        assert compiled.cuda.cached  # built by a worker, read from the disk cache here


class FakeDeviceArray:
    """A device array as `__cuda_array_interface__` describes it; never dereferenced."""

    def __init__(self, address, shape, typestr="<f2"):
        self.shape = shape
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (address, False),
            "strides": None,
            "version": 3,
        }


def test_the_gpu_path_times_each_surviving_config_with_outputs_preserved(matmul, monkeypatch):
    """The GPU path's plumbing without a GPU: device arguments bind with the kernel's
    device checks, builds are for the device's arch, the timing and the preservation of
    the stored tensors are asked for exactly once per surviving config / tuning."""
    from tilelang.runtime import gpu
    from tilelang.tuning import gpu_timing

    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_90")
    timed, preserved = [], []
    times = iter([3e-6, 1e-6])

    def fake_time(launch, stream, warmup, rep):
        timed.append((stream, warmup, rep))
        return next(times)

    class FakePreserved:
        def __init__(self, regions, stream):
            preserved.append((regions, stream))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(gpu_timing, "time_launches", fake_time)
    monkeypatch.setattr(gpu_timing, "Preserved", FakePreserved)
    a = FakeDeviceArray(1 << 20, (72, 40))
    b = FakeDeviceArray(2 << 20, (40, 56))
    c = FakeDeviceArray(3 << 20, (72, 56))
    tuned = tl.autotune(matmul.matmul, configs=[SMALL, HUGE, MEDIUM], key=["M", "N"], rep=5)
    assert tuned.best(a, b, c) == MEDIUM
    assert timed == [(0, 2, 5), (0, 2, 5)]
    assert preserved == [([(3 << 20, 72 * 56 * 2)], 0)]
    (decision,) = tuned.decisions.values()
    assert decision.method == "gpu:sm_90" and decision.notes == []
    assert [t.status for t in decision.trials] == ["ok", "pruned", "ok"]
    assert "measured" in tuned.report()


def test_no_module_outside_the_autotuner_imports_its_private_names():
    import ast
    from pathlib import Path

    package = Path(tl.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        if path.parent.name == "tuning":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "tilelang.tuning"
            ):
                found += [(path.name, a.name) for a in node.names if a.name.startswith("_")]
    assert found == []


def test_the_pieces_a_library_tuner_reuses_are_public(capsys):
    from tilelang import tuning

    assert tuning.error_reason(ValueError("too big. Use less.\nmore")) == "ValueError: too big."
    assert OSError in tuning.machine_errors() and ValueError not in tuning.machine_errors()
    trials = [
        tuning.Trial({"BM": 16}, "ok", seconds=2e-6),
        tuning.Trial({"BM": 64}, "pruned", "spills: 8 bytes stored, 8 loaded (255 registers)"),
    ]
    decision = tuning.Decision((("M", 48),), "model:sm_90", trials, 0, ["a note"])
    lines = tuning.decision_text("mine", decision).splitlines()
    assert lines[0] == "==== autotune mine at M=48 (model:sm_90) ===="
    assert lines[1:3] == ["  a note", "  chosen: BM=16"]
    assert lines[-1].startswith("  BM=64") and lines[-1].endswith("(255 registers)")
    quiet = tuning.Progress("mine", (("M", 48),), 2, enabled=False)
    quiet.step({"BM": 16}, trials[0])
    quiet.close()
    assert capsys.readouterr().err == ""


RULED_KERNEL = """
import tilelang as tl

RULE = lambda BN, **_: {rule}  # noqa: E731 -- the warps rule, outside the kernel's source


@tl.kernel(warps=RULE)
def copy_l(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], BN: tl.constexpr = 256):
    b = tl.blocks(tl.cdiv(N, BN))
    tl.store(y, [b * BN], tl.load(x, [b * BN], [BN]))
"""

TUNE_RULED = """
import json, sys
sys.dont_write_bytecode = True  # the module changes between runs within a second
sys.path.insert(0, folder)
import numpy as np
import tilelang as tl
from ruled import copy_l

tuned = tl.autotune(copy_l, configs=[dict(BN=256), dict(BN=512)], key=["N"], progress=False)
x = np.arange(2048, dtype=np.float32)
tuned(x, np.zeros_like(x))
(decision,) = tuned.decisions.values()
print(json.dumps({"cached": [t.cached for t in decision.trials]}))
"""


def test_a_warps_rule_keys_records_by_the_warps_it_gives(tmp_path, capsys, monkeypatch):
    """A lambda's repr holds its address, new in every process: the records key on the
    warps the rule gives for each config, so a second process hits every record, and a
    rule that gives one config other warps makes that config's record (only) stale."""
    from conftest import run_python

    from tilelang.cli import main

    cache, folder = tmp_path / "cache", tmp_path / "module"
    folder.mkdir()
    module = folder / "ruled.py"
    module.write_text(RULED_KERNEL.format(rule="4"))
    assert run_python(TUNE_RULED, cache, folder=str(folder))["cached"] == [False, False]
    assert run_python(TUNE_RULED, cache, folder=str(folder))["cached"] == [True, True]
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(cache))
    capsys.readouterr()
    assert main(["cache", "ls"]) == 0
    mine = [line for line in capsys.readouterr().out.splitlines() if "autotune copy_l" in line]
    assert len(mine) == 2  # one record per config, not one per process
    module.write_text(RULED_KERNEL.format(rule="8 if BN == 512 else 4"))
    assert run_python(TUNE_RULED, cache, folder=str(folder))["cached"] == [True, False]
    assert run_python(TUNE_RULED, cache, folder=str(folder))["cached"] == [True, True]


def test_records_of_another_min_blocks_are_not_hits(matmul):
    """The same source launched with other bounds is another build: its records are
    its own (min_blocks is keyed as warps is, by what it gives)."""
    plain = matmul.matmul
    bounded = tl.kernel(plain.fn, warps=plain.warps, min_blocks=lambda **_: 2)
    first = tl.autotune(plain, configs=[SMALL], key=["M"], progress=False)
    first(*operands(16, 80, 16))
    second = tl.autotune(bounded, configs=[SMALL], key=["M"], progress=False)
    second(*operands(16, 80, 16))
    assert len(first.evaluated) == len(second.evaluated) == 1
    constant = tl.kernel(plain.fn, warps=plain.warps, min_blocks=2)
    again = tl.autotune(constant, configs=[SMALL], key=["M"], progress=False)
    again(*operands(16, 80, 16))
    assert again.evaluated == []  # a rule and a constant giving the same bound: one record


def test_a_compile_worker_keeps_a_pruned_configs_spill_warning_to_itself():
    """A config that spills is pruned with the counts as its reason; the worker that
    compiled it must not print the spill warning too (the parent's compile does not)."""
    from tilelang.spill_verdict import RegisterSpillWarning

    class Spilling:
        def compile(self, **arguments):
            import warnings

            warnings.warn("8 bytes spilled", RegisterSpillWarning, stacklevel=1)
            warnings.warn("another warning stays", UserWarning, stacklevel=1)

    token = -1
    tuner_module._WORK[token] = (Spilling(), {}, {}, "sm_90")
    try:
        with pytest.warns(UserWarning) as said:
            assert tuner_module._compile_in_worker(token, {"BM": 64}) is None
    finally:
        del tuner_module._WORK[token]
    assert [w.category for w in said] == [UserWarning], [str(w.message) for w in said]

"""The autotuner in the library (issue 13 §4, last bullet): `tilelang.quant.matmul` and
`tilelang.kernels` (`ssd_chunk_scan`, `selective_scan`) keep their hand-written tiles
first, rank candidates by the static report when asked on the host, keep one disk
record per candidate, run exactly the default tiles under TILELANG_AUTOTUNE=off, and
compute the same result whatever tile the tuner picks (real NVRTC compiles for sm_90,
no GPU needed)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import Device

from tilelang import dtypes, quant
from tilelang.kernels import ssd, ssm
from tilelang.quant import tuning
from tilelang.quant.matmul import choose
from tilelang.tuning import library


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """A fresh disk cache for the module (records from other runs would hide evaluation)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("TILELANG_CACHE_DIR", str(folder))
        patch.delenv("TILELANG_AUTOTUNE", raising=False)
        yield folder


def exact_weight(k: int, n: int, seed: int = 0) -> quant.QuantizedWeight:
    """i4 codes with one f16 scale per column: every x @ W below is exact in f32 (each
    column is its scale times an integer sum of at most 24 bits), so every tile and
    every split-K order gives the same bits."""
    rng = np.random.default_rng(seed)
    return quant.quantize(rng.standard_normal((k, n)), "i4", group_size=-1)


def small_integers(m: int, k: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-2, 3, (m, k)).astype(np.float16)


def predicted(plan) -> float:
    """A plan's time by the static report: its launches' predictions, added."""
    return sum(launch.perf().predicted_seconds for launch in plan.launches)


# ------------------------------------------------------------------------- quant


def test_quant_plan_ranks_candidates_by_the_static_report_and_says_it_is_a_prediction():
    qw = exact_weight(256, 128)
    default = quant.plan(qw, 80, "sm_90")
    tuned = quant.plan(qw, 80, "sm_90", tune=True)
    ranking = tuned.tuning
    assert ranking.method == "model:sm_90"
    assert any("a prediction, not a measurement" in note for note in ranking.notes)
    assert "predicted" in tuning.report(ranking)
    configs = [t.config for t in ranking.trials]
    assert configs[0] == tuning.config_of(default.choice)  # the hand-written tile first
    assert tuning.choice_of(ranking.config) == tuned.choice
    ok = [t for t in ranking.trials if t.status == "ok"]
    # The ranking's seconds are the plans' own static reports, recomputed here.
    assert ranking.trials[0].seconds == pytest.approx(predicted(default))
    assert ranking.trials[ranking.best].seconds == pytest.approx(predicted(tuned))
    assert ranking.trials[ranking.best].seconds == min(t.seconds for t in ok)
    for trial in ranking.trials:
        if trial.status == "pruned":
            assert trial.reason  # every pruned candidate says why


def test_adding_a_candidate_evaluates_only_it_and_reuses_the_records():
    qw = exact_weight(1024, 128, seed=2)
    first = choose(4, 1024, 128, "sm_90", tuning.operands(qw, "f16").packing)
    assert first.split_k > 1  # few blocks: the rule splits K, so the variants differ
    unsplit = dataclasses.replace(first, split_k=1)
    halved = dataclasses.replace(first, split_k=first.split_k // 2)
    before = len(tuning.evaluated)
    two = tuning.decide(qw, 4, choices=[first, unsplit], progress=False)
    assert [c for _, c in tuning.evaluated[before:]] == [
        tuning.config_of(first),
        tuning.config_of(unsplit),
    ]
    assert not any(t.cached for t in two.trials)
    middle = len(tuning.evaluated)
    three = tuning.decide(qw, 4, choices=[first, unsplit, halved], progress=False)
    assert [c for _, c in tuning.evaluated[middle:]] == [tuning.config_of(halved)]
    assert [t.cached for t in three.trials] == [True, True, False]
    assert [t.seconds for t in three.trials[:2]] == [t.seconds for t in two.trials]
    # A decision is the least seconds, ties to the earlier candidate.
    seconds = [t.seconds for t in three.trials]
    assert three.best == min(range(3), key=lambda i: (seconds[i], i))


def test_tuned_quant_matmul_equals_the_untuned_call_bit_for_bit_on_the_cpu_backend():
    qw = exact_weight(256, 128)
    x = small_integers(96, 256)
    assert quant.plan(qw, 96, "sm_90", tune=True).choice != quant.plan(qw, 96).choice, (
        "this test wants a shape where the ranking picks another tile than `choose`"
    )
    tuned = quant.matmul(x, qw, tune=True)
    untuned = quant.matmul(x, qw)
    np.testing.assert_array_equal(tuned, untuned)
    # Both are right: the exact product, rounded once to f16 (numpy, float64).
    reference = x.astype(np.float64) @ qw.dequantize().astype(np.float64)
    np.testing.assert_array_equal(tuned, reference.astype(np.float16))


def test_host_calls_keep_the_default_tiles_unless_asked():
    qw = exact_weight(256, 128, seed=3)
    before = len(tuning.evaluated)
    quant.matmul(small_integers(24, 256), qw)  # tune=None: a host call evaluates nothing
    assert len(tuning.evaluated) == before
    with pytest.raises(ValueError, match=r"tune must be None .* got 'fast'"):
        quant.matmul(small_integers(24, 256), qw, tune="fast")


def test_autotune_off_gives_exactly_the_default_tiles(monkeypatch):
    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")
    qw = exact_weight(256, 128, seed=4)
    x = small_integers(72, 256)
    before = len(tuning.evaluated)
    plan = quant.plan(qw, 72, "cpu", tune=True)
    assert plan.tuning is None
    assert plan.choice == choose(72, 256, 128, "sm_90", tuning.operands(qw, "f16").packing)
    np.testing.assert_array_equal(quant.matmul(x, qw, tune=True), quant.matmul(x, qw))
    assert len(tuning.evaluated) == before
    assert library.method_for(True, on_device=True) is None


def test_a_device_call_times_every_candidate_once_and_runs_the_fastest(monkeypatch):
    """The GPU path without a GPU: launches are recorded instead of made, and a timing
    stand-in reports as seconds the blocks a candidate's call launched (so an unsplit
    tile, one block, is the fastest; ties go to the earlier candidate)."""
    from tilelang.runtime import gpu
    from tilelang.tuning import gpu_timing

    launches = []
    monkeypatch.setattr(gpu, "DeviceBuffer", Device)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_90a")
    monkeypatch.setattr(gpu, "current_stream", lambda values: 7)
    monkeypatch.setattr(gpu, "launch", lambda build, pointers, scalars, grid, stream: launches.append(
        (build.thread.name, build.arch, grid, stream)
    ))  # fmt: skip

    def timed(launch, stream, warmup, rep):
        before = len(launches)
        launch()
        return float(sum(math.prod(grid) for _, _, grid, _ in launches[before:]))

    monkeypatch.setattr(gpu_timing, "time_launches", timed)
    qw = exact_weight(512, 128, seed=8)
    x = Device(small_integers(2, 512))
    ops = tuning.operands(qw, "f16")
    choices = tuning.candidates(2, 512, 128, "sm_90a", ops.packing)
    assert choices[0].split_k > 1 and any(c.split_k == 1 for c in choices)
    before = len(tuning.evaluated)
    quant.matmul(x, qw)  # tune=None: a device call tunes
    assert [c for _, c in tuning.evaluated[before:]] == [tuning.config_of(c) for c in choices]
    unsplit = next(c for c in choices if c.split_k == 1)
    assert launches[-1][0] == "quant_matmul"  # the last launch is the chosen tile's
    assert all(arch == "sm_90a" and stream == 7 for _, arch, _, stream in launches)
    decision = tuning.decide(qw, 2, method="gpu", arch="sm_90a", choices=choices)
    assert decision.method == "gpu:sm_90a" and not decision.notes  # measured
    assert tuning.choice_of(decision.config) == unsplit
    # A warm call evaluates nothing and launches the chosen tile only.
    launches.clear()
    quant.matmul(x, qw)
    assert [name for name, *_ in launches] == ["quant_matmul"]
    assert len(tuning.evaluated) == before + len(choices)


# ------------------------------------------------------------------------- kernels


def ssd_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    nb, length, heads, p, groups, n = 1, 32, 2, 16, 1, 16
    return dict(
        x=rng.standard_normal((nb, length, heads, p)).astype(np.float16),
        dt=rng.random((nb, length, heads)).astype(np.float16),
        A=-rng.random(heads).astype(np.float32),
        B=rng.standard_normal((nb, length, groups, n)).astype(np.float16),
        C=rng.standard_normal((nb, length, groups, n)).astype(np.float16),
        chunk_size=32,
    )


def test_ssd_tuned_on_the_host_picks_the_least_predicted_tile_and_computes_the_same():
    inputs = ssd_inputs()
    configs = ssd.configs(16, 16, half=True)
    assert configs[0] == {"BP": ssd.block_p(16, 16, True), "WARPS": ssd.WARPS}
    untuned = ssd.ssd_chunk_scan(**inputs)
    tuned = ssd.ssd_chunk_scan(**inputs, tune=True)
    tuner = library.tuner(ssd.ssd_chunk_scan_kernel, configs, ("NB", "H", "P", "N"))
    (decision,) = tuner.decisions.values()
    assert decision.method == "model:sm_90"
    # The rule recomputed from each config's static report on sm_90.
    placeholders = ("HD", "PD", "NZ", "LZ", "HZ", "PZ", "NBIAS", "NI", "HI", "PI", "SI")
    placeholders += ("NF", "HF", "PF", "SF")  # the one-element tensors of unused inputs
    sizes = dict.fromkeys(placeholders, 1) | dict(NB=1, L=32, H=2, P=16, G=1, N=16)
    # What a call assumes of its sizes: the largest power of two up to 128 dividing each.
    facts = {
        name: max(d for d in (1, 2, 4, 8, 16, 32) if size % d == 0) for name, size in sizes.items()
    }
    fixed = dict(T=dtypes.f16, TD=dtypes.f16, BL=32, BN=16)
    seconds = []
    for config in configs:
        compiled = ssd.ssd_chunk_scan_kernel.compile(
            assume=facts, target="sm_90", **fixed, **config
        )
        seconds.append(compiled.perf(**sizes).predicted_seconds)
    assert [t.seconds for t in decision.trials] == pytest.approx(seconds)
    assert decision.config == configs[min(range(len(configs)), key=lambda i: (seconds[i], i))]
    # Another tile, the same result: the CPU backend adds each dot in the same order.
    np.testing.assert_array_equal(tuned, untuned)


def test_ssd_autotune_off_runs_the_default_tiles(monkeypatch):
    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")
    inputs = ssd_inputs(seed=5)
    known = {memo: len(t.decisions) for memo, t in library._TUNERS.items()}
    result = ssd.ssd_chunk_scan(**inputs, tune=True)
    assert {memo: len(t.decisions) for memo, t in library._TUNERS.items()} == known
    monkeypatch.delenv("TILELANG_AUTOTUNE")
    np.testing.assert_array_equal(result, ssd.ssd_chunk_scan(**inputs, tune=False))


def scan_operands(seed: int, nb: int, dm: int, length: int, n: int) -> tuple[np.ndarray, ...]:
    """u, delta, A, B, C of a selective scan: f16 but A."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((nb, dm, length)).astype(np.float16)
    delta = rng.random((nb, dm, length)).astype(np.float16)
    A = -rng.random((dm, n)).astype(np.float32)
    B, C = (rng.standard_normal((nb, n, length)).astype(np.float16) for _ in range(2))
    return u, delta, A, B, C


def test_selective_scan_tunes_the_channels_per_block_without_changing_a_bit():
    nb, dm, length, n = 1, 16, 40, 8
    u, delta, A, B, C = scan_operands(6, nb, dm, length, n)
    configs = ssm.scan_configs(n, dm, dm)
    assert configs == [{"BD": 8}, {"BD": 4}, {"BD": 16}]  # the default, half, twice
    tuned = ssm.selective_scan(u, delta, A, B, C, tune=True)
    tuner = library.tuner(ssm.selective_scan_kernel, configs, ("NB", "DM", "N"))
    (decision,) = tuner.decisions.values()
    seconds = [t.seconds for t in decision.trials]
    assert decision.config == configs[min(range(3), key=lambda i: (seconds[i], i))]
    np.testing.assert_array_equal(tuned, ssm.selective_scan(u, delta, A, B, C))


def test_the_scan_walk_tunes_its_tiles_and_every_tile_gives_the_same_bits():
    nb, dm, length, n = 1, 128, 40, 8
    u, delta, A, B, C = scan_operands(8, nb, dm, length, n)
    configs = ssm.walk_configs(dm)
    assert configs[0] == {"BD": 32, "BL": 16} and len(configs) == 4
    tuned = ssm.selective_scan(u, delta, A, B, C, tune=True, method="walk")
    tuner = library.tuner(ssm.selective_scan_walk_kernel, configs, ("NB", "DM", "N"))
    (decision,) = tuner.decisions.values()
    assert decision.config in configs
    shape = (nb, 1, n, length)
    bt, ct = (ssm.step_columns(v.reshape(shape), dtypes.f16, n, False) for v in (B, C))
    for config in configs:  # the order of every addition is the same at every tile
        out = np.empty_like(u)
        ssm.selective_scan_walk_kernel(
            u, delta, A, bt, ct,
            np.zeros(1, np.float32), np.zeros((1, 1, 1), np.float16), np.zeros(1, np.float32),
            out, np.zeros((1, 1, 1), np.float32), *(np.zeros((1, 1, 1, 1), np.float32),) * 2,
            T=dtypes.f16, BN=8, **config,
        )  # fmt: skip
        np.testing.assert_array_equal(out, tuned)

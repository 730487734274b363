"""Spill warnings follow ptxas once a GPU build has run it (`tilelang.spill_verdict`).

The register estimate passes the budget for kernels ptxas fits (it is within 15% of
ptxas, often above): a GPU build warns `RegisterSpillWarning` only when ptxas spills,
at the kernel's line, naming the estimate and ptxas's count; a build read from the
disk cache warns the same again. The pass run alone, with no ptxas to ask, warns
nothing (its hard refusal far above the budget is tests/test_plan.py's); the CPU target
has no register limit to warn about.
"""

import warnings
from pathlib import Path

import pytest

import tilelang as tl
from tilelang import spill_verdict
from tilelang.ir.parser import parse_function
from tilelang.passes import plan_registers
from tilelang.runtime.cache import DiskCache
from tilelang.runtime.cubin import Resources
from tilelang.target import target

RegisterSpillWarning = plan_registers.RegisterSpillWarning


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh disk cache: every first compile below runs the passes and ptxas."""
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    return DiskCache()


def fitting_kernel():
    """Two [8, 2048] f32 tiles live together: an estimate of 268 registers, above 255,
    but constants ptxas keeps in no register (10 registers, no spill)."""

    @tl.kernel(warps=4)
    def held_zeros(y: tl.Tensor[tl.f32, "M", 2048]):
        a = tl.zeros([8, 2048], tl.f32)
        b = tl.full([8, 2048], 1.0, tl.f32)
        tl.store(y, [0, 0], a)
        tl.store(y, [8, 0], b)

    return held_zeros


def spilling_kernel():
    """Every loaded element waits for the sum of all of them: 256 f32 words a thread
    live at once, more than ptxas can give (it spills). A fresh kernel each call."""

    @tl.kernel(warps=4)
    def scale_by_total(x: tl.Tensor[tl.f32, "M", 2048], y: tl.Tensor[tl.f32, "M", 2048]):
        t = tl.load(x, [0, 0], [16, 2048])
        s = tl.sum(tl.sum(t, axis=1), axis=0)
        tl.store(y, [0, 0], t * s)

    return scale_by_total


def spills(caught) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, RegisterSpillWarning)]


def def_line(file: str, start: str) -> int:
    """The line of `file` that begins (after indentation) with `start`."""
    lines = Path(file).read_text().splitlines()
    (number,) = [n for n, text in enumerate(lines, 1) if text.strip().startswith(start)]
    return number


def compile_recording(kernel, arch: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = kernel.compile(target=arch)
    return compiled, caught


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_an_estimate_above_the_budget_that_ptxas_fits_compiles_without_a_warning(cache, arch):
    compiled, caught = compile_recording(fitting_kernel(), arch)
    assert compiled.cuda.estimate == 268 > 255  # the estimate alone would have warned
    assert compiled.resources.spill_store_bytes == 0
    assert compiled.resources.registers <= 255
    assert spills(caught) == []


def test_the_estimate_stays_beside_ptxas_count_for_tools(cache):
    compiled, _ = compile_recording(fitting_kernel(), "sm_90")
    assert plan_registers.registers(compiled.stages["plan_registers"]) == 268
    again, _ = compile_recording(fitting_kernel(), "sm_90")
    assert again.cuda.cached and again.cuda.estimate == 268


def test_a_kernel_ptxas_spills_warns_at_the_users_line_with_both_counts(cache):
    kernel = spilling_kernel()
    compiled, caught = compile_recording(kernel, "sm_90")
    resources = compiled.resources
    assert resources.spill_store_bytes > 0
    (warning,) = spills(caught)
    file = kernel.fn.__code__.co_filename
    line = def_line(file, "def scale_by_total(")
    assert (warning.filename, warning.lineno) == (file, line)
    message = str(warning.message)
    assert message.startswith(f"{file}:{line}:")
    assert f"kernel scale_by_total spills: ptxas gives it {resources.registers} registers" in (
        message
    )
    assert f"stores {resources.spill_store_bytes} bytes a thread to local memory" in message
    assert f"The estimate was {compiled.cuda.estimate} registers" in message
    assert "Use smaller tiles" in message


def test_a_build_read_from_disk_warns_the_spill_the_first_build_warned(cache):
    _, first = compile_recording(spilling_kernel(), "sm_90")
    compiled, again = compile_recording(spilling_kernel(), "sm_90")
    assert compiled.cuda.cached
    said = [(str(w.message), w.filename, w.lineno) for w in spills(first)]
    assert len(said) == 1
    assert said == [(str(w.message), w.filename, w.lineno) for w in spills(again)]


def test_a_build_read_from_disk_stays_silent_where_ptxas_fit(cache):
    compile_recording(fitting_kernel(), "sm_90")
    compiled, again = compile_recording(fitting_kernel(), "sm_90")
    assert compiled.cuda.cached and spills(again) == []


# ------------------------------------------------------------------ without a build


def rows_kernel() -> str:
    """Block IR with two [8, 2048] f32 zero tiles live together (estimate 268)."""
    layout = "spatial(8, 16).local(1, 128)"
    tile = f"tile<f32, [8, 2048], {layout}>"
    return (
        'kernel big(%y: tensor<f32, [M, N]>) sizes(%M: i32, %N: i32) warps(4) loc("big.py":1:1) {\n'
        "  %bm = blocks %M : i32\n"
        f"  %t0 = full 0.0:f32 : {tile}\n"
        f"  %t1 = full 0.0:f32 : {tile}\n"
        "  store %y[%bm, 0:i32], %t0\n"
        "  store %y[%bm, 0:i32], %t1\n"
        "}\n"
    )


def test_the_pass_alone_warns_nothing_within_the_estimates_error():
    fn = parse_function(rows_kernel())
    assert plan_registers.estimate(fn).peak == 268 > 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan_registers.run(fn)  # the CPU: no register limit, nothing to spill
        plan_registers.run(fn, target("sm_90"))  # no ptxas to ask: no build, no verdict


def test_a_cached_builds_stages_run_later_warn_nothing(cache):
    compile_recording(fitting_kernel(), "sm_90")
    compiled, _ = compile_recording(fitting_kernel(), "sm_90")
    assert compiled.cuda.cached
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegisterSpillWarning)
        stages = compiled.stages  # the passes run now, outside the build (perf() does)
    assert plan_registers.registers(stages["plan_registers"]) == 268


def test_inside_a_build_the_pass_leaves_its_note_and_warns_nothing():
    fn = parse_function(rows_kernel())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with spill_verdict.deferred() as notes:
            plan_registers.run(fn, target("sm_90"))
    (note,) = notes
    assert (note.kernel, note.file, note.line, note.estimate, note.limit) == (
        "big",
        "big.py",
        1,
        268,
        255,
    )
    assert note.over
    assert not spill_verdict.defer(note)  # the scope closed with the build


def report(store: int | None, registers: int = 240) -> Resources:
    """What ptxas says: `store` bytes of spill stores (and as many loads); None: a
    report read from the cubin, which has no spill counts."""
    source = "cubin" if store is None else "ptxas"
    return Resources(registers, store, store, 0, store or 0, source)


def test_the_verdict_is_ptxas_spill_stores_when_it_reports_them():
    note = spill_verdict.SpillNote("k", "k.py:3:1", "k.py", 3, 268, "parts", 255, "the 255", "")
    assert spill_verdict.verdict(note, report(0), "k") is None
    assert spill_verdict.verdict(note, report(16, 255), "k") == note.ptxas_message(report(16, 255))
    under = spill_verdict.SpillNote("k", "k.py:3:1", "k.py", 3, 200, "parts", 255, "the 255", "")
    assert "ptxas gives it 255 registers" in spill_verdict.verdict(under, report(16, 255), "k")


def test_without_spill_counts_from_ptxas_the_estimate_judges():
    over = spill_verdict.SpillNote("k", "k.py:3:1", "k.py", 3, 268, "parts", 255, "the 255", "")
    under = spill_verdict.SpillNote("k", "k.py:3:1", "k.py", 3, 200, "parts", 255, "the 255", "")
    assert spill_verdict.verdict(over, report(None), "k") == over.estimate_message()
    assert spill_verdict.verdict(under, report(None), "k") is None


def test_a_spill_without_the_passes_note_still_names_the_kernel():
    message = spill_verdict.verdict(None, report(24, 255), "scale")
    assert message is not None
    assert message.startswith("kernel scale spills: ptxas gives it 255 registers")
    assert spill_verdict.verdict(None, report(0), "scale") is None


# ------------------------------------------------------- ptxas's own cap (launch bounds)


def capped_note(min_blocks=None, limit=255, said="the 255 a thread can have"):
    return spill_verdict.SpillNote(
        "k", "k.py:3:1", "k.py", 3, 140, "parts", limit, said, "Use smaller tiles.", 128, min_blocks
    )


def test_a_spill_below_the_budget_names_the_launch_bounds_and_min_blocks():
    """128 registers where the budget is 255: ptxas's own cap under the launch bounds,
    not the 255; the budget holds 128 registers and 8 bytes (2 words) spilled, so
    min_blocks=1 is the fix the message names."""
    message = spill_verdict.verdict(capped_note(), report(8, 128), "k")
    assert "ptxas gives it 128 registers per thread (its own cap under the launch bounds" in (
        message
    )
    assert "__launch_bounds__(128), no minimum of blocks per multiprocessor" in message
    assert "not the 255 a thread can have" in message
    assert "(the 255 a thread can have)" not in message
    used, words = 128, 8 // 4
    assert (
        f"State @tl.kernel(min_blocks=1): ptxas may then use up to 255 registers, room for "
        f"the {used} it used and the {words} words it spilled" in message
    )
    assert message.endswith("Or: Use smaller tiles.")


def test_a_spill_the_budget_cannot_hold_says_min_blocks_is_not_enough():
    message = spill_verdict.verdict(capped_note(), report(600, 128), "k")
    assert "its own cap under the launch bounds" in message
    assert f"would raise the cap to 255, fewer than the {128 + 600 // 4} registers" in message
    assert "State @tl.kernel(min_blocks=1)" not in message


def test_a_spill_at_the_budget_keeps_the_budget_as_its_cap():
    for registers in (255, 248):  # within a warp's allocation unit of the budget
        message = spill_verdict.verdict(capped_note(), report(8, registers), "k")
        assert f"ptxas gives it {registers} registers per thread (the 255 a thread can have)" in (
            message
        )
        assert "min_blocks" not in message and "launch bounds" not in message
    stated = capped_note(2, 168, "the 168 a thread can have when min_blocks=2 blocks ...")
    message = spill_verdict.verdict(stated, report(8, 168), "k")
    assert "(the 168 a thread can have when min_blocks=2" in message
    # Below a stated min_blocks' budget: ptxas's cap, under the bounds the kernel states.
    message = spill_verdict.verdict(stated, report(8, 128), "k")
    assert "__launch_bounds__(128, 2)" in message and "State @tl.kernel" not in message


#: Tiles of the library's quantized matmul at which ptxas (sm_90), left its own choice
#: of blocks per multiprocessor, caps registers below 255 and spills a few bytes.
CAPPED_TILES = [
    dict(WT=tl.u4, BM=32, BN=32, BK=256, PK=256, STAGES=2),
    dict(WT=tl.u4, BM=16, BN=128, BK=256, PK=256, STAGES=3),
    dict(WT=tl.u8, BM=16, BN=128, BK=256, PK=256, STAGES=2),
    dict(WT=tl.u8, BM=16, BN=256, BK=64, PK=64, STAGES=3),
]


def test_a_kernel_ptxas_caps_below_the_budget_is_told_min_blocks_and_it_works(cache):
    """The library's quantized matmul body launched without its min_blocks rule: where
    ptxas spills under a cap of its own, the warning names the launch bounds and
    min_blocks=1, and the build with min_blocks=1 spills nothing (ptxas's word)."""
    from tilelang.quant import kernels

    library = kernels.quant_matmul
    plain = tl.kernel(library.fn, warps=library.warps, expect_replicated=True)
    bounded = tl.kernel(library.fn, warps=library.warps, min_blocks=1, expect_replicated=True)
    shown = 0
    for tiles in CAPPED_TILES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled = plain.compile(target="sm_90", **tiles)
        resources = compiled.resources
        if not resources.spill_store_bytes or resources.registers > 255 - 8:
            continue
        (warning,) = spills(caught)
        message = str(warning.message)
        threads = library.warps(**plain.constants(tiles)) * 32
        assert f"__launch_bounds__({threads}), no minimum of blocks" in message
        assert "State @tl.kernel(min_blocks=1)" in message
        assert "(the 255 a thread can have)" not in message
        fixed = bounded.compile(target="sm_90", **tiles).resources
        assert fixed.spill_store_bytes == 0
        assert resources.registers < fixed.registers <= 255
        shown += 1
    assert shown, "no tile spills under ptxas's own cap any more: find another for this test"

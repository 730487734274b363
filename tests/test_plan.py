"""The passes plan_shared and plan_registers, as text in / text out."""

from __future__ import annotations

import pytest
from conftest import load_example

import tilelang as tl
from tilelang import dtypes
from tilelang.analysis import shared_layouts
from tilelang.ir.nodes import SharedLoad
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import verify
from tilelang.ir.visit import walk
from tilelang.passes import plan_registers, plan_shared
from tilelang.target import Target, target


def kernel(params: str, sizes: str, body: str, name: str = "k") -> str:
    return f"kernel {name}({params}) sizes({sizes}) warps(4) {{\n{body}}}\n"


def lines_of(fn) -> list[str]:
    return [line.strip() for line in print_function(fn).splitlines()[1:-1]]


def line_of(lines: list[str], start: str) -> str:
    (line,) = [line for line in lines if line.startswith(start)]
    return line


# -- plan_shared: layouts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shape", "expected"),
    [
        ("f16", (64, 64), "shared(64:64, 64:1) ^ swizzle(3, 3, 6)"),  # 128-byte rows
        ("f16", (16, 128), "shared(16:128, 128:1) ^ swizzle(3, 3, 6)"),  # 256-byte rows
        ("f32", (64, 32), "shared(64:32, 32:1) ^ swizzle(3, 2, 5)"),
        ("f16", (64, 32), "shared(64:32, 32:1) ^ swizzle(2, 3, 6)"),  # 64-byte rows
        ("u4", (64, 64), "shared(64:64, 64:1) ^ swizzle(1, 5, 8)"),  # 32-byte rows
        ("f16", (8, 24), "shared(8:24, 24:1)"),  # 48-byte rows: no standard swizzle
        ("u3", (64, 64), "shared(64:64, 64:1)"),  # not a power-of-two element size
        ("f16", (256,), "shared(256:1)"),  # one row
    ],
)
def test_default_layout(dtype, shape, expected):
    assert str(shared_layouts.default_layout(dtypes.dtype(dtype), shape)) == expected


def test_tile_bytes_are_packed_and_rounded_to_16():
    from tilelang.ir.parser import parse_type

    assert shared_layouts.tile_bytes(parse_type("shared<u3, [64, 64]>")) == 1536
    assert shared_layouts.tile_bytes(parse_type("shared<u3, [3, 5]>")) == 16  # 45 bits
    assert shared_layouts.tile_bytes(parse_type("shared<f16, [8, 8], shared(8:12, 8:1)>")) == 192


# -- plan_shared: placement ----------------------------------------------------------------------

SEQUENTIAL = kernel(
    "%x: tensor<f16, [M, K]>, %y: tensor<f32, [M, K]>",
    "%M: i32, %K: i32",
    "  %bm = blocks %M : i32\n"
    '  %sa = shared_alloc : shared<f16, [64, 64]>  loc("k.py":3:3)\n'
    "  copy_async %x[%bm, 0:i32] -> %sa\n"
    "  async_commit\n"
    "  async_wait 0\n"
    "  sync\n"
    "  %a = shared_load %sa : tile<f16, [64, 64]>\n"
    '  %sb = shared_alloc : shared<f16, [32, 64]>  loc("k.py":9:3)\n'
    '  %sc = shared_alloc : shared<f32, [16, 16]>  loc("k.py":10:3)\n'
    "  %b = full 0.0:f16 : tile<f16, [32, 64]>\n"
    "  %c = full 0.0:f32 : tile<f32, [16, 16]>\n"
    "  shared_store %sb, %b\n"
    "  shared_store %sc, %c\n"
    "  sync\n"
    "  %c2 = shared_load %sc : tile<f32, [16, 16]>\n"
    "  %b2 = shared_load %sb : tile<f16, [32, 64]>\n"
    "  store %y[%bm, 0:i32], %c2\n",
)


def test_dead_tiles_share_space():
    fn = plan_shared.run(parse_function(SEQUENTIAL))
    verify(fn)
    lines = lines_of(fn)
    # %sa dies at its shared_load; %sb (placed first: larger) takes its bytes, %sc is
    # live with %sb and goes after it.
    assert line_of(lines, "%sa =") == (
        "%sa = shared_alloc {bytes=8192, offset=0} : "
        'shared<f16, [64, 64], shared(64:64, 64:1) ^ swizzle(3, 3, 6)>  loc("k.py":3:3)'
    )
    assert line_of(lines, "%sb =").startswith("%sb = shared_alloc {bytes=4096, offset=0} :")
    assert line_of(lines, "%sc =").startswith("%sc = shared_alloc {bytes=1024, offset=4096} :")
    assert shared_layouts.total_bytes(fn) == 8192


def test_every_use_sees_the_chosen_layout():
    fn = plan_shared.run(parse_function(SEQUENTIAL))
    loads = [i for i in walk(fn) if isinstance(i, SharedLoad)]
    assert [str(i.shared.type.layout) for i in loads] == [
        "shared(64:64, 64:1) ^ swizzle(3, 3, 6)",
        "shared(16:16, 16:1) ^ swizzle(2, 2, 5)",
        "shared(32:64, 64:1) ^ swizzle(3, 3, 6)",
    ]


def loop_kernel(inside: bool) -> str:
    """%sa is read at the top of a loop; %sb is allocated after that read."""
    body = (
        "    %a = shared_load %sa : tile<f16, [64, 64]>\n"
        "    %sb = shared_alloc : shared<f16, [64, 64]>\n"
        "    shared_store %sb, %a\n"
    )
    if inside:
        body = f"  for %k = 0:i32 to %K step 64:i32 {{\n{body}    yield\n  }}\n"
    else:
        body = body.replace("    ", "  ")
    return kernel(
        "%x: tensor<f16, [M, K]>",
        "%M: i32, %K: i32",
        "  %bm = blocks %M : i32\n"
        "  %sa = shared_alloc : shared<f16, [64, 64]>\n"
        "  copy_async %x[%bm, 0:i32] -> %sa\n"
        "  async_commit\n"
        "  async_wait 0\n" + body,
    )


def test_a_tile_used_in_a_loop_is_live_over_the_whole_loop():
    flat = plan_shared.run(parse_function(loop_kernel(inside=False)))
    assert "offset=0" in line_of(lines_of(flat), "%sb =")
    assert shared_layouts.total_bytes(flat) == 8192
    looped = plan_shared.run(parse_function(loop_kernel(inside=True)))
    # the next iteration reads %sa again after %sb was written: no sharing
    assert "{bytes=8192, offset=8192}" in line_of(lines_of(looped), "%sb =")
    assert shared_layouts.total_bytes(looped) == 16384


def test_a_user_layout_is_kept():
    text = SEQUENTIAL.replace("shared<f32, [16, 16]>", "shared<f32, [16, 16], shared(16:17, 16:1)>")
    fn = plan_shared.run(parse_function(text))
    # 16·17 - 1 + 1 = 271 elements of 4 bytes = 1084, rounded to 1088
    assert line_of(lines_of(fn), "%sc =").startswith(
        "%sc = shared_alloc {bytes=1088, offset=4096} : shared<f32, [16, 16], shared(16:17, 16:1)>"
    )


def test_over_the_limit_names_the_target_and_the_largest_tiles():
    tiny = Target("tiny", shared_bytes=8000)
    with pytest.raises(plan_shared.SharedMemoryError) as err:
        plan_shared.run(parse_function(SEQUENTIAL), tiny)
    assert str(err.value) == (
        "k.py:3:3: kernel k needs 8192 bytes of shared memory, more than the 8000 bytes "
        "(7 KiB) a block can have on tiny. The largest shared tiles: "
        "%sa: shared<f16, [64, 64], shared(64:64, 64:1) ^ swizzle(3, 3, 6)> (8192 bytes, at "
        "k.py:3:3), %sb: shared<f16, [32, 64], shared(32:64, 64:1) ^ swizzle(3, 3, 6)> "
        "(4096 bytes, at k.py:9:3), %sc: shared<f32, [16, 16], shared(16:16, 16:1) ^ "
        "swizzle(2, 2, 5)> (1024 bytes, at k.py:10:3). Use smaller tiles or fewer pipeline "
        "stages."
    )
    assert isinstance(err.value, ValueError)


def _needing(rows: int) -> str:
    """SEQUENTIAL with its second tile grown to `rows` x 256 f32 (rows KiB)."""
    text = SEQUENTIAL.replace("shared<f16, [32, 64]>", f"shared<f32, [{rows}, 256]>").replace(
        "tile<f16, [32, 64]>", f"tile<f32, [{rows}, 256]>"
    )
    return text.replace("%b = full 0.0:f16", "%b = full 0.0:f32")


@pytest.mark.parametrize(
    ("name", "kib"),
    [("sm_80", 163), ("sm_86", 99), ("sm_89", 99), ("sm_90", 227), ("sm_90a", 227),
     ("sm_100", 227), ("sm_120", 99), ("cpu", 227)],
)  # fmt: skip
def test_each_target_has_its_shared_memory_limit(name, kib):
    limit = target(name).shared_bytes
    assert limit == kib * 1024
    # The grown tile is live with a 1 KiB one (the 8 KiB one dies before them).
    plan_shared.run(parse_function(_needing(kib - 1)), target(name))
    with pytest.raises(plan_shared.SharedMemoryError, match=rf"can have on {name}\."):
        plan_shared.run(parse_function(_needing(kib)), target(name))


def test_the_default_target_is_the_cpu_which_accepts_what_sm90_does():
    with pytest.raises(plan_shared.SharedMemoryError, match=r"^k\.py:9:3: kernel k needs 263168"):
        plan_shared.run(parse_function(_needing(256)))


def test_loop_carried_shared_tiles_share_a_live_range():
    text = kernel(
        "%x: tensor<f16, [M, K]>",
        "%M: i32, %K: i32",
        "  %bm = blocks %M : i32\n"
        "  %s0 = shared_alloc : shared<f16, [16, 64]>\n"
        "  %s1 = shared_alloc : shared<f16, [16, 64]>\n"
        "  %r0, %r1 = for %k = 0:i32 to %K step 64:i32 iter(%a: shared<f16, [16, 64]> = %s0, "
        "%b: shared<f16, [16, 64]> = %s1) {\n"
        "    copy_async %x[%bm, %k] -> %a\n"
        "    async_commit\n"
        "    async_wait 1\n"
        "    %t = shared_load %b : tile<f16, [16, 64]>\n"
        "    yield %b, %a\n"
        "  }\n"
        "  %s2 = shared_alloc : shared<f16, [16, 64]>\n"
        "  %t2 = shared_load %r0 : tile<f16, [16, 64]>\n",
    )
    fn = plan_shared.run(parse_function(text))
    verify(fn)
    offsets = {
        line.split(" =")[0]: line.split("offset=")[1].split("}")[0]
        for line in lines_of(fn)
        if "shared_alloc" in line
    }
    # %s0 and %s1 swap roles every iteration and %r0 is read after the loop: all three
    # tiles are live together.
    assert offsets == {"%s0": "0", "%s1": "2048", "%s2": "4096"}


# -- plan_registers ------------------------------------------------------------------------------

SMALL = kernel(
    "%x: tensor<f16, [M, N]>, %y: tensor<f32, [M, N]>",
    "%M: i32, %N: i32",
    '  %bm = blocks %M : i32  loc("k.py":1:1)\n'
    '  %row = mul %bm, 16:i32 : i32  loc("k.py":2:1)\n'
    '  %a = load %x[%row, 0:i32] : tile<f16, [16, 64], spatial(16, 8).local(1, 8)>  loc("k.py":3:1)\n'
    '  %b = cast %a : tile<f32, [16, 64], spatial(16, 8).local(1, 8)>  loc("k.py":4:1)\n'
    '  store %y[%row, 0:i32], %b  loc("k.py":5:1)\n',
)


def test_words_per_thread():
    from tilelang.ir.parser import parse_type

    def words(text: str) -> int:
        return plan_registers.words(parse_type(text), warps=4)

    assert words("tile<f32, [16, 64], spatial(16, 8).local(1, 8)>") == 8
    assert words("tile<f16, [16, 64], spatial(16, 8).local(1, 8)>") == 4
    assert words("tile<u4, [64, 64], spatial(64, 2).local(1, 32)>") == 4
    assert words("tile<u3, [16, 64], spatial(16, 8).local(1, 8)>") == 1  # 24 bits
    assert words("tile<f32, [1, 64], spatial(1, 8).local(1, 8).replicated(16)>") == 8
    assert words("tile<f32, [64, 64]>") == 32  # no layout: 4096 elements / 128 threads
    assert words("i64") == 2
    assert words("f16") == 1
    assert words("tensor<u4, [K, N]>") == 2
    assert words("shared<f16, [64, 64]>") == 0


def test_pressure_at_every_point():
    fn = parse_function(SMALL)
    program = plan_registers.Program.of(fn)
    # x, y: 2 words (pointers); M, N: 1 (used by every access to x and y, for masks).
    # At the cast, %a (4) dies and %b (8) is written over it: 4 + 8 - 4.
    assert plan_registers.pressure_by_point(program, 4) == [7, 8, 11, 13, 13]
    plan = plan_registers.estimate(fn)
    assert plan.peak == max(13, plan_registers.FLOOR) == 28
    assert str(plan.at) == "k.py:4:1"
    assert plan.live == (("b", 8), ("a", 4), ("y", 2), ("M", 1), ("N", 1), ("row", 1))


def test_run_records_the_estimate_on_blocks():
    fn = plan_registers.run(parse_function(SMALL))
    verify(fn)
    assert lines_of(fn)[0] == '%bm = blocks %M {registers=28} : i32  loc("k.py":1:1)'
    assert plan_registers.registers(fn) == 28
    assert plan_registers.registers(parse_function(SMALL)) is None


LOOP = kernel(
    "%x: tensor<f32, [M, 64]>",
    "%M: i32, %N: i32",
    "  %bm = blocks %M : i32\n"  # 0
    "  %t = load %x[%bm, 0:i32] : tile<f32, [16, 64], spatial(16, 8).local(1, 8)>\n"  # 1
    "  %r = for %k = 0:i32 to %N step 64:i32 iter(%acc: tile<f32, [16, 64], "
    "spatial(16, 8).local(1, 8)> = %t) {\n"  # 2
    "    %u = load %x[%bm, %k] : tile<f32, [16, 64], spatial(16, 8).local(1, 8)>\n"  # 3
    "    %acc_1 = add %acc, %u : tile<f32, [16, 64], spatial(16, 8).local(1, 8)>\n"  # 4
    "    %v = full 1.0:f32 : tile<f32, [16, 64], spatial(16, 8).local(1, 8)>\n"  # 5
    "    yield %acc_1\n"  # 6
    "  }\n"  # 7: the end of the loop
    "  store %x[%bm, 0:i32], %r\n",  # 8
)


def test_liveness_over_loops():
    program = plan_registers.Program.of(parse_function(LOOP))
    interval = {var.name: (program.start[var], program.stop[var]) for var in program.start}
    assert interval["bm"] == (0, 8)
    assert interval["t"] == (1, 2)  # used as the loop's init
    assert interval["k"] == (2, 7)  # the loop variable lives to the back edge
    assert interval["N"] == (-1, 7)  # the loop's stop, needed at every back edge
    assert interval["M"] == (-1, 8)  # in the shape of %x: every access uses it
    assert interval["acc"] == (2, 4)
    assert interval["acc_1"] == (4, 6)
    assert interval["v"] == (5, 5)  # unused: live where it is written
    assert interval["r"] == (7, 8)
    assert interval["x"] == (-1, 8)
    pressure = plan_registers.pressure_by_point(program, 4)
    # at the add: x 2, M 1, N 1, bm 1, k 1, acc 8 (dies, overwritten), u 8 (dies), acc_1 8
    assert pressure[4] == 6 + 8 + 8 + 8 - 8


def test_over_255_names_the_largest_tiles():
    layout = "spatial(8, 16).local(32, 16)"  # 128 threads, 512 elements each
    text = kernel(
        "%y: tensor<f32, [M, N]>, %z: tensor<f16, [M, N]>, %w: tensor<u4, [M, N]>",
        "%M: i32, %N: i32",
        "  %bm = blocks %M : i32\n"
        f'  %acc = full 0.0:f32 : tile<f32, [256, 256], {layout}>  loc("big.py":7:11)\n'
        f"  %h = full 0.0:f16 : tile<f16, [256, 256], {layout}>\n"
        f"  %q = full 0:u4 : tile<u4, [256, 256], {layout}>\n"
        "  %s = full 0.0:f32 : tile<f32, [16, 64], spatial(16, 8).local(1, 8)>\n"
        '  store %y[%bm, 0:i32], %acc  loc("big.py":9:5)\n'
        "  store %z[%bm, 0:i32], %h\n"
        "  store %w[%bm, 0:i32], %q\n"
        "  store %y[%bm, 0:i32], %s\n",
        name="big",
    )
    fn = parse_function(text)
    plan = plan_registers.estimate(fn)
    # %acc 512 + %h 256 + %q 64 + %s 8, three pointers 6, M, N, bm: 849
    assert plan.peak == 849
    assert str(plan.at) == "<unknown>:0:0"  # the `full` of %s: everything is live there
    with pytest.raises(plan_registers.RegisterBudgetError) as err:
        plan_registers.run(fn)
    assert str(err.value) == (
        "kernel big needs about 849 registers per thread (an estimate from the values live "
        "at its peak), more than the 255 a thread can have. At "
        "<unknown>:0:0 the largest live tiles are "
        f"%acc: tile<f32, [256, 256], {layout}>, 512 registers per thread; "
        f"%h: tile<f16, [256, 256], {layout}>, 256 registers per thread; "
        f"%q: tile<u4, [256, 256], {layout}>, 64 registers per thread. "
        "Use smaller tiles (BM, BN, BK constexprs) or more warps (now 4)."
    )
    assert isinstance(err.value, ValueError)


def test_the_peak_location_is_the_first_point_at_the_peak():
    layout = "spatial(8, 16).local(32, 16)"
    text = kernel(
        "%y: tensor<f32, [M, N]>",
        "%M: i32, %N: i32",
        "  %bm = blocks %M : i32\n"
        f'  %acc = full 0.0:f32 : tile<f32, [256, 256], {layout}>  loc("big.py":7:11)\n'
        '  store %y[%bm, 0:i32], %acc  loc("big.py":9:5)\n',
    )
    plan = plan_registers.estimate(parse_function(text))
    assert (plan.peak, str(plan.at)) == (512 + 5, "big.py:7:11")
    assert plan.live[0] == ("acc", 512)


@pytest.mark.parametrize(
    ("example", "kernel_name", "constexprs"),
    [
        ("vector_add", "vector_add", {}),
        ("softmax", "softmax", {}),
        ("row_sum", "row_sum", {}),
        ("cumsum", "cumsum_rows", {}),
        ("cumsum", "cumsum_rows", {"T": tl.i32}),
        ("matmul", "matmul", {}),
        ("matmul", "matmul", {"BM": 32, "BN": 32, "BK": 64}),
        ("quant_matmul", "quant_matmul", {"WT": tl.u4}),
        ("quant_matmul", "quant_matmul", {"WT": tl.u8}),
        ("quant_matmul", "quant_matmul", {"WT": tl.f4e2m1}),
    ],
)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_estimate_is_within_25_percent_of_ptxas(
    example, kernel_name, constexprs, arch, tmp_path, monkeypatch
):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    kernel = getattr(load_example(example), kernel_name)
    compiled = kernel.compile(target=arch, **constexprs)
    estimate = plan_registers.registers(compiled.stages["plan_registers"])
    actual = compiled.resources.registers
    assert 0.75 * actual <= estimate <= 1.25 * actual, (estimate, actual)

"""Shared tiles the kernel only stores to and loads from get the swizzle whose accesses
take the fewest wavefronts (`tilelang.analysis.shared_layouts.access_layout`).

Laws over shapes, dtypes and access layouts, against a bank count written here (one
word set per bank per phase, in plain Python) with the access widths the lowering
makes (`lowering.shared.shared_runs`): the chosen layout takes no more wavefronts than
the standard swizzle, the fewest of every chunk-keeping swizzle (so none where one is
conflict-free), keeps every access as wide, and is a bijection of the tile. End to
end, the transposed store of a [64, 64] tile, and a tile a dot reads keeps the standard.
"""

import math

import numpy as np
import pytest

import tilelang as tl
from tilelang import dtypes
from tilelang.analysis import shared_layouts
from tilelang.analysis.layout_policy import blocked_layout
from tilelang.ir.layout import Layout
from tilelang.ir.nodes import SharedAlloc
from tilelang.ir.parser import parse_function
from tilelang.ir.shared_layout import SharedLayout, Swizzle, row_major
from tilelang.ir.types import SharedType
from tilelang.ir.visit import walk
from tilelang.lowering.shared import shared_runs
from tilelang.lowering.values import SharedTile
from tilelang.passes import plan_shared
from tilelang.target import target


def oracle_wavefronts(shared: SharedLayout, layout: Layout, bits: int) -> tuple[int, int]:
    """(wavefronts, one a phase) of every warp moving `layout` to or from `shared`: the
    lowering's access width; per phase of 128 // max(width, 4) lanes, the most distinct
    4-byte words one of the 32 banks holds."""
    _, width = shared_runs(SharedTile(0, _dtype(bits), shared), layout)
    vector = width * 8 // bits
    lanes_per_phase = 128 // max(width, 4)
    table = layout.table()
    offsets = shared.table()
    total = ideal = 0
    for warp in range(layout.num_threads // 32):
        for k in range(0, layout.num_locals, vector):
            for phase in range(0, 32, lanes_per_phase):
                banks: dict[int, set[int]] = {}
                for lane in range(phase, phase + lanes_per_phase):
                    index = tuple(int(v) for v in table[32 * warp + lane, k])
                    byte = int(offsets[index]) * bits // 8
                    for word in range(byte // 4, byte // 4 + max(1, width // 4)):
                        banks.setdefault(word % 32, set()).add(word)
                total += max(len(words) for words in banks.values())
                ideal += 1
    return total, ideal


def _dtype(bits: int):
    return {8: dtypes.u8, 16: dtypes.f16, 32: dtypes.f32, 64: dtypes.f64}[bits]


def widths(shared: SharedLayout, accesses, dtype) -> list[int]:
    return [shared_runs(SharedTile(0, dtype, shared), a)[1] for a in accesses]


def chunk_keeping_swizzles(dtype, shape) -> list[Swizzle | None]:
    """Every XOR of 1-3 higher offset bits into the 16-byte chunk index, enumerated
    here: the bits stay inside the tile and the tile's size is whole blocks."""
    elements = math.prod(shape)
    base = int(math.log2(16 * 8 // dtype.bits))
    found: list[Swizzle | None] = [None]
    for bits in (1, 2, 3):
        for shift in range(base + bits, 20):
            if (1 << (shift + bits)) <= elements and elements % (1 << (base + bits)) == 0:
                found.append(Swizzle(bits, base, shift))
    return found


def transposed(shape, dtype, threads):
    """The layout `tl.transpose` gives a blocked tile of the transposed shape."""
    return blocked_layout(shape[::-1], dtype, threads).permute((1, 0))


CASES = [
    # (shape, dtype, threads, accesses: "T" a transposed layout, "B" the blocked one)
    ((32, 32), dtypes.f32, 128, "TB"),
    ((64, 64), dtypes.f32, 128, "TB"),
    ((64, 64), dtypes.f16, 128, "TB"),
    ((64, 32), dtypes.f32, 64, "TB"),
    ((32, 64), dtypes.f16, 256, "TB"),
    ((64, 64), dtypes.u8, 128, "TB"),
    ((16, 128), dtypes.f16, 128, "TB"),
    ((32, 32), dtypes.f64, 128, "TB"),
    ((64, 64), dtypes.f32, 128, "BT"),
    ((64, 64), dtypes.f32, 128, "BB"),
    ((32, 128), dtypes.f16, 128, "BB"),
]


@pytest.mark.parametrize("shape, dtype, threads, kinds", CASES)
def test_the_chosen_layout_takes_the_fewest_wavefronts_of_every_swizzle(
    shape, dtype, threads, kinds
):
    make = {"T": transposed, "B": blocked_layout}
    accesses = tuple(make[k](shape, dtype, threads) for k in kinds)
    chosen = shared_layouts.access_layout(dtype, shape, accesses)
    standard = shared_layouts.default_layout(dtype, shape)

    def cost(layout):
        counts = [oracle_wavefronts(layout, a, dtype.bits) for a in accesses]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    (got, ideal), (before, _) = cost(chosen), cost(standard)
    assert got <= before
    options = [
        row_major(*shape) if s is None else row_major(*shape).swizzled(s)
        for s in (chunk_keeping_swizzles(dtype, shape))
    ]
    best = min(cost(layout)[0] for layout in [standard, *options])
    assert got == best  # so conflict-free wherever a swizzle is
    if before == ideal:
        assert chosen == standard  # ties keep the standard swizzle
    assert widths(chosen, accesses, dtype) == widths(standard, accesses, dtype)
    table = chosen.table().ravel()
    np.testing.assert_array_equal(np.sort(table), np.arange(math.prod(shape)))
    assert shared_layouts.access_wavefronts(chosen, accesses, dtype.bits) == got


def test_the_transposed_stores_the_report_named_become_conflict_free_or_nearly():
    """32x32 f32: the standard swizzle takes 4x the ideal; 64x64 f32 16x on the stores
    (512 wavefronts a warp for 32); 64x64 f16 8x. Chosen: conflict-free, conflict-free,
    and 2x on the 64x64 f32 stores (no XOR of a 16-byte chunk index spreads 32 rows of
    one column over more than 16 of them)."""
    for shape, dtype, most in (
        ((32, 32), dtypes.f32, 1),
        ((64, 64), dtypes.f32, 2),
        ((64, 64), dtypes.f16, 1),
    ):
        store = transposed(shape, dtype, 128)
        chosen = shared_layouts.access_layout(
            dtype, shape, (store, blocked_layout(shape, dtype, 128))
        )
        standard = shared_layouts.default_layout(dtype, shape)
        got, ideal = oracle_wavefronts(chosen, store, dtype.bits)
        before, _ = oracle_wavefronts(standard, store, dtype.bits)
        assert before >= 4 * ideal and got <= most * ideal


@tl.kernel(warps=4)
def staged_transpose(
    x: tl.Tensor["T", "N", "N"],
    y: tl.Tensor["T", "N", "N"],
    T: tl.constexpr = tl.f32,
    B: tl.constexpr = 64,
):
    s = tl.shared([B, B], T)
    s.store(tl.transpose(tl.load(x, [0, 0], [B, B])))
    tl.store(y, [0, 0], s.load())


@pytest.mark.parametrize("block, dtype", [(32, tl.f32), (64, tl.f32), (64, tl.f16)])
def test_a_staged_transpose_takes_the_chosen_layout_and_stays_exact(block, dtype):
    planned = staged_transpose.stages(target="sm_90", T=dtype, B=block)["plan_shared"]
    (alloc,) = [i for i in walk(planned) if isinstance(i, SharedAlloc)]
    layout = alloc.result.type.layout
    assert layout != shared_layouts.default_layout(dtype, (block, block))
    assert layout.swizzle.base == int(math.log2(128 // dtype.bits))  # 16-byte chunks whole
    rng = np.random.default_rng(0)
    x = rng.standard_normal((block, block)).astype({16: np.float16, 32: np.float32}[dtype.bits])
    y = staged_transpose(x, np.zeros_like(x), T=dtype, B=block)
    np.testing.assert_array_equal(y, x.T)
    staged_transpose.compile(target="sm_90", T=dtype, B=block)  # its CUDA builds too


BLOCKED = "local(4, 1).spatial(16, 8).local(1, 8)"
TRANSPOSED = "local(1, 4).column_spatial(8, 16).local(8, 1)"
A_FRAGMENT = "spatial(2, 1).local(2, 1).column_local(2, 8).replicated(2).spatial(8, 4).local(1, 2)"
B_FRAGMENT = (
    "replicated(2, rank=2).spatial(1, 2).local(4, 1).column_local(2, 4)"
    ".column_spatial(4, 8).local(2, 1)"
)
ACC = "spatial(2, 2).local(2, 1).column_local(2, 4).spatial(8, 4).local(1, 2)"


def staged_operand(load_layout: str, read_by_dot: bool) -> str:
    """Block IR: b transposed into a [64, 64] f16 shared tile, loaded back in
    `load_layout`, then the B operand of a dot or stored."""
    if read_by_dot:
        tail = f"  %acc = dot %a_1, %s_1, %zero : tile<f32, [64, 64], {ACC}>\n"
        tail += "  store %c[0:i32, 0:i32], %acc\n"
    else:
        tail = "  store %b[0:i32, 0:i32], %s_1\n"
    return (
        "kernel k(%a: tensor<f16, [M, K]>, %b: tensor<f16, [K, N]>, %c: tensor<f32, [M, N]>)"
        " sizes(%M: i32, %K: i32, %N: i32) warps(4) {\n"
        "  %bx = blocks 1:i32 : i32\n"
        "  %s = shared_alloc : shared<f16, [64, 64]>\n"
        f"  %b_1 = load %b[0:i32, 0:i32] : tile<f16, [64, 64], {BLOCKED}>\n"
        f"  %b_2 = transpose %b_1, perm=[1, 0] : tile<f16, [64, 64], {TRANSPOSED}>\n"
        "  shared_store %s, %b_2\n"
        f"  %a_1 = load %a[0:i32, 0:i32] : tile<f16, [64, 64], {A_FRAGMENT}>\n"
        f"  %s_1 = shared_load %s : tile<f16, [64, 64], {load_layout}>\n"
        f"  %zero = full 0.0:f32 : tile<f32, [64, 64], {ACC}>\n" + tail + "}\n"
    )


def test_a_tile_a_dot_or_ldmatrix_may_read_keeps_the_standard_swizzle():
    """The standard swizzle is the one ldmatrix and the tensor cores' descriptors read
    without conflicts: a tile loaded in an mma fragment's layout (a dot's operand, or
    any load ldmatrix could make) is left to `default_layout`; loaded in a blocked
    layout (a relayout then feeds the dot) its accesses choose."""
    blocked = shared_layouts.access_layouts(parse_function(staged_operand(BLOCKED, False)))
    ((tile, layout),) = blocked.items()
    assert tile.name == "s" and layout != shared_layouts.default_layout(tl.f16, (64, 64))
    for read_by_dot in (True, False):
        fn = parse_function(staged_operand(B_FRAGMENT, read_by_dot))
        assert shared_layouts.access_layouts(fn) == {}
    planned = plan_shared.run(parse_function(staged_operand(B_FRAGMENT, True)), target("sm_90"))
    (alloc,) = [i for i in walk(planned) if isinstance(i, SharedAlloc)]
    assert alloc.result.type.layout == shared_layouts.default_layout(tl.f16, (64, 64))


def test_only_the_standard_swizzles_align_to_a_whole_period_on_wgmma_targets():
    standard = shared_layouts.default_layout(tl.f32, (64, 32))  # 128-byte rows
    assert standard.swizzle == Swizzle.for_bytes(128, 32)
    chosen = row_major(64, 32).swizzled(Swizzle(3, 2, 8))
    period_bytes = standard.swizzle.period * 4
    assert shared_layouts.alignment(SharedType(tl.f32, (64, 32), standard), True) == period_bytes
    assert shared_layouts.alignment(SharedType(tl.f32, (64, 32), chosen), True) == 16
    assert shared_layouts.alignment(SharedType(tl.f32, (64, 32), standard), False) == 16

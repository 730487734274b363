"""`tl.concat`, `tl.join` and `tl.split`, on the interpreter and the CPU backend alike.

`tl.concat` lays tiles end to end along an axis (numpy's concatenate), the inverse of
`tl.split(x, sections, axis)`; parts each thread already holds are concatenated by
relabelling registers, with no shared-memory round trip. `tl.join(a, b)` and `tl.split(x)`
are Triton's: a stack on a new last axis of size 2 (numpy's stack(axis=-1)) and its
inverse, so `tl.reshape(tl.join(a, b), [2 * n])` interleaves a and b (interleaved RoPE)."""

import linecache
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import local, spatial
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import IRVerifyError, verify
from tilelang.ir.visit import walk
from tilelang.runtime.sass import disassemble, opcodes

NATIVE = {"f32": np.float32, "f16": np.float16, "i8": np.int8, "i32": np.int32, "u4": np.uint8}


def random_values(dtype: str, size: int, rng: np.random.Generator) -> np.ndarray:
    dt = tl.dtype(dtype)
    if dt.is_float:
        return rng.standard_normal(size).astype(NATIVE[dtype])
    return rng.integers(dt.min, dt.max + 1, size=size).astype(NATIVE[dtype])


def as_tensor(values: np.ndarray, dtype: str):
    dt = tl.dtype(dtype)
    return tl.pack(values, dt) if dt.bits < 8 else values


def as_numpy(result, dtype: str) -> np.ndarray:
    return result.unpack() if tl.dtype(dtype).bits < 8 else result


def concat_kernel(shapes: list[tuple[int, ...]], axis: int, warps: int):
    """A kernel that reads each part from one flat tensor, concatenates the parts along
    `axis` and writes the result flat."""
    sizes = [math.prod(s) for s in shapes]
    boxes = [(sum(sizes[:k]), sizes[k], shapes[k]) for k in range(len(shapes))]
    total = sum(sizes)

    @tl.kernel(warps=warps)
    def cat(x: tl.Tensor["DT", "N"], y: tl.Tensor["DT", "M"], DT: tl.constexpr = tl.f32):
        parts = []
        for start, size, shape in boxes:
            parts.append(tl.reshape(tl.load(x, [start], [size]), shape))
        tl.store(y, [0], tl.reshape(tl.concat(parts, axis), [total]))

    return cat


@st.composite
def concatenations(draw):
    rank = draw(st.integers(1, 3))
    axis = draw(st.integers(-rank, rank - 1))
    others = draw(st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=rank, max_size=rank))
    widths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    # At most 128 elements: a tile of an odd size may sit whole in each thread's registers.
    assume(math.prod(others) // others[axis] * sum(widths) <= 128)
    shapes = []
    for width in widths:
        shape = list(others)
        shape[axis] = width
        shapes.append(tuple(shape))
    return shapes, axis


@settings(max_examples=8, deadline=None)
@given(
    case=concatenations(),
    dtype=st.sampled_from(["f32", "f16", "i8", "i32", "u4"]),
    warps=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 1000),
)
def test_concat_is_numpys_concatenate_on_the_interpreter_and_the_cpu(case, dtype, warps, seed):
    shapes, axis = case
    rng = np.random.default_rng(seed)
    parts = [random_values(dtype, math.prod(s), rng).reshape(s) for s in shapes]
    expected = np.concatenate(parts, axis=axis).ravel()
    flat = np.concatenate([p.ravel() for p in parts])
    cat = concat_kernel(shapes, axis, warps)
    dt = tl.dtype(dtype)
    out = np.zeros_like(expected)
    interpreted = cat.interpret(as_tensor(flat, dtype), as_tensor(out, dtype), DT=dt)
    compiled = cat(as_tensor(flat, dtype), as_tensor(out, dtype), DT=dt)
    assert np.array_equal(as_numpy(interpreted, dtype), expected)
    assert np.array_equal(as_numpy(compiled, dtype), expected)


@st.composite
def splits(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.sampled_from([1, 2, 3, 4, 8, 16]), min_size=rank, max_size=rank))
    axis = draw(st.integers(-rank, rank - 1))
    shape[axis] = draw(st.integers(2, 24))
    first = draw(st.integers(1, shape[axis] - 1))
    return tuple(shape), axis, first


def split_concat_kernel(shape: tuple[int, ...], axis: int, first: int):
    """x -> concat(split(x, [first, rest], axis)) into y; the parts concatenated the
    other way round, split back and concatenated into a; concat of split's tuple into b
    with the axis left to its default (-1) when it is the last (all flat)."""
    rest = shape[axis] - first
    size = math.prod(shape)

    @tl.kernel(warps=2)
    def roundtrip(
        x: tl.Tensor[tl.f32, "N"],
        y: tl.Tensor[tl.f32, "N"],
        a: tl.Tensor[tl.f32, "N"],
        b: tl.Tensor[tl.f32, "N"],
    ):
        whole = tl.reshape(tl.load(x, [0], [size]), shape)
        head, tail = tl.split(whole, [first, rest], axis)
        tl.store(y, [0], tl.reshape(tl.concat([head, tail], axis), [size]))
        back_tail, back_head = tl.split(tl.concat([tail, head], axis), [rest, first], axis)
        tl.store(a, [0], tl.reshape(tl.concat([back_head, back_tail], axis), [size]))
        parts = (
            tl.split(whole, [first, rest])
            if axis % len(shape) == len(shape) - 1
            else tl.split(whole, [first, rest], axis)
        )
        tl.store(b, [0], tl.reshape(tl.concat(parts, axis), [size]))

    return roundtrip


@settings(max_examples=6, deadline=None)
@given(case=splits(), seed=st.integers(0, 1000))
def test_concatenating_what_split_cut_gives_the_tile_back_and_splitting_a_concat_its_parts(
    case, seed
):
    shape, axis, first = case
    x = np.random.default_rng(seed).standard_normal(math.prod(shape)).astype(np.float32)
    kernel = split_concat_kernel(shape, axis, first)
    args = (x, *(np.zeros_like(x) for _ in range(3)))
    for outputs in (kernel(*args), kernel.interpret(*args)):
        for out in outputs:
            assert np.array_equal(out, x)


def test_a_single_tile_concatenates_to_itself_with_no_instruction():
    @tl.kernel(warps=1)
    def one(x: tl.Tensor[tl.f32, 4, 8], y: tl.Tensor[tl.f32, 4, 8]):
        tl.store(y, [0, 0], tl.concat([tl.load(x, [0, 0], [4, 8])], axis=1))

    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    assert np.array_equal(one(x, np.zeros_like(x)), x)
    assert not [i for i in walk(one.specialize()) if isinstance(i, ir.Concat)]


# -- tl.join and tl.split(x): Triton's stack on a new last axis and its inverse ------------


def join_split_kernel(shape: tuple[int, ...], warps: int):
    """a, b (flat, of `shape`) -> join(a, b) into j; split(join(b, a)) into p, q (flat)."""
    size = math.prod(shape)

    @tl.kernel(warps=warps)
    def join_split(
        a: tl.Tensor["DT", "N"],
        b: tl.Tensor["DT", "N"],
        j: tl.Tensor["DT", "M"],
        p: tl.Tensor["DT", "N"],
        q: tl.Tensor["DT", "N"],
        DT: tl.constexpr = tl.f32,
    ):
        x = tl.reshape(tl.load(a, [0], [size]), shape)
        y = tl.reshape(tl.load(b, [0], [size]), shape)
        tl.store(j, [0], tl.reshape(tl.join(x, y), [2 * size]))
        first, second = tl.split(tl.join(y, x))
        tl.store(p, [0], tl.reshape(first, [size]))
        tl.store(q, [0], tl.reshape(second, [size]))

    return join_split


@pytest.mark.parametrize(
    ("shape", "dtype", "warps"),
    [((16,), "f32", 1), ((4, 8), "f16", 2), ((2, 4, 4), "i8", 1), ((8, 4), "u4", 1)],
)
def test_join_stacks_on_a_new_last_axis_and_split_takes_it_apart(shape, dtype, warps):
    rng = np.random.default_rng(3)
    size = math.prod(shape)
    a, b = (random_values(dtype, size, rng) for _ in range(2))
    # Triton's join: shape + [2], a at [..., 0] and b at [..., 1] (numpy's stack(axis=-1)).
    joined = np.stack([a.reshape(shape), b.reshape(shape)], axis=-1)
    assert joined.shape == (*shape, 2)
    kernel, dt = join_split_kernel(shape, warps), tl.dtype(dtype)
    zeros = [np.zeros(2 * size, a.dtype), np.zeros_like(a), np.zeros_like(a)]
    args = [as_tensor(v, dtype) for v in (a, b, *zeros)]
    for outputs in (kernel(*args, DT=dt), kernel.interpret(*args, DT=dt)):
        j, p, q = (as_numpy(out, dtype) for out in outputs)
        assert np.array_equal(j, joined.ravel())
        assert np.array_equal(p, b) and np.array_equal(q, a)  # split(join(b, a)) is (b, a)


@tl.kernel(warps=2)
def split_pairs(
    x: tl.Tensor[tl.f32, 4, 6, 2], even: tl.Tensor[tl.f32, 4, 6], odd: tl.Tensor[tl.f32, 4, 6]
):
    first, second = tl.split(tl.load(x, [0, 0, 0], [4, 6, 2]))
    tl.store(even, [0, 0], first)
    tl.store(odd, [0, 0], second)


def test_split_of_a_last_dimension_of_two_gives_its_two_columns_of_rank_one_less():
    x = np.arange(48, dtype=np.float32).reshape(4, 6, 2)
    args = (x, np.zeros((4, 6), np.float32), np.zeros((4, 6), np.float32))
    for even, odd in (split_pairs(*args), split_pairs.interpret(*args)):
        assert np.array_equal(even, x[..., 0]) and np.array_equal(odd, x[..., 1])


@tl.kernel(warps=1)
def join_scalars(x: tl.Tensor[tl.f32, 8], y: tl.Tensor[tl.f32, 2], z: tl.Tensor[tl.f32, 2]):
    tile = tl.load(x, [0], [8])
    pair = tl.join(tl.sum(tile), tl.max(tile))
    tl.store(y, [0], pair)
    low, high = tl.split(pair)  # rank 0 tiles, as Triton's split of a [2] tile gives
    tl.store(z, [0], tl.join(high, low))


def test_join_of_rank_zero_tiles_is_a_pair_and_split_gives_them_back():
    x = np.array([3, -1, 4, 1, -5, 9, 2, 6], dtype=np.float32)
    args = (x, np.zeros(2, np.float32), np.zeros(2, np.float32))
    for y, z in (join_scalars(*args), join_scalars.interpret(*args)):
        assert np.array_equal(y, [19, 9]) and np.array_equal(z, [9, 19])


@tl.kernel(warps=4)
def rope_interleaved(
    x: tl.Tensor["DT", 64, 64],
    c: tl.Tensor[tl.f32, 64, 32],
    s: tl.Tensor[tl.f32, 64, 32],
    y: tl.Tensor["DT", 64, 64],
    DT: tl.constexpr = tl.f32,
):
    """Interleaved RoPE as Triton writes it: (x0, x1) pairs, rotated, joined back."""
    x0, x1 = tl.split(tl.reshape(tl.load(x, [0, 0], [64, 64]).to(tl.f32), [64, 32, 2]))
    cos, sin = tl.load(c, [0, 0], [64, 32]), tl.load(s, [0, 0], [64, 32])
    rotated = tl.join(x0 * cos - x1 * sin, x0 * sin + x1 * cos)
    tl.store(y, [0, 0], tl.reshape(rotated, [64, 64]).to(DT))


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_interleaved_rope_rotates_each_pair_in_place_with_no_shared_memory(dtype):
    rng = np.random.default_rng(4)
    # Small integers: every product and sum is exact, so the oracle is bit-exact.
    x = rng.integers(-8, 9, (64, 64)).astype(NATIVE[dtype])
    c, s = (rng.integers(-4, 5, (64, 32)).astype(np.float32) for _ in range(2))
    x0, x1 = x[:, 0::2].astype(np.float32), x[:, 1::2].astype(np.float32)
    expected = np.empty_like(x)
    expected[:, 0::2] = x0 * c - x1 * s
    expected[:, 1::2] = x0 * s + x1 * c
    dt = tl.dtype(dtype)
    for out in (
        rope_interleaved(x, c, s, np.zeros_like(x), DT=dt),
        rope_interleaved.interpret(x, c, s, np.zeros_like(x), DT=dt),
    ):
        assert np.array_equal(out, expected)
    build = rope_interleaved.compile(DT=dt)
    assert "shared_relayout" not in dict(build.thread.stats)
    assert shared_traffic(build.thread) == []


def test_interleaved_rope_compiles_for_sm_90a_with_no_shared_memory_at_all():
    build = rope_interleaved.compile(target="sm_90a", DT=tl.f16)
    assert shared_traffic(build.thread) == []
    # The pair is each thread's innermost register digit: the interleaved row is stored
    # 16 bytes at a time (an outermost digit stored it 2 bytes at a time).
    stores = {k: v for k, v in dict(build.thread.stats).items() if "global_store" in k}
    assert set(stores) == {"global_store_bytes_16"}, stores
    resources = build.resources  # ptxas' own count: no shared bytes, no spills
    assert resources.shared_bytes == 0 and resources.dynamic_shared_bytes == 0
    assert resources.spill_store_bytes == 0 and resources.registers > 0


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("tl.join(a, a, axis=-1)", r"new last axis, as in Triton .* tl.concat\(\[a, b\], axis\)"),
        ("tl.join(a, a, 1)", r"tl.join\(a, b\) takes two tiles .*got also 1\)"),
        ("tl.join(a, h)", "tl.join stacks tiles of one dtype: a is f32, b is f16"),
        ("tl.join(a, b)", r"one shape: a has shape \[4, 8\], b \[4, 4\]"),
        ("tl.join(a, 1.0)", "the second tile of tl.join must be a tile"),
        (
            "tl.split(a)",
            r"last dimension to be 2, .* shape \[4, 8\]; .* tl.split\(x, sections, axis\)",
        ),
        ("tl.split(tl.sum(a))", r"last dimension to be 2, .* shape \[\]"),
        ("tl.split(p, axis=0)", r"it takes no axis, got axis=0\).* tl.split\(x, sections, axis\)"),
    ],
)
def test_bad_joins_and_splits_are_reported_at_the_users_line(body, match):
    header = "def bad(x: tl.Tensor[tl.f32, 4, 8]):"
    assert_reported_at_line_6(header, "b, h, p = a[:, :4], a.to(tl.f16), a[:, :2]", body, match)


def assert_reported_at_line_6(header: str, names: str, body: str, match: str) -> None:
    """A kernel `header` whose tile `a` is [4, 8] f32 and `names` more, then `body` at
    line 6: specializing it fails there with `match`."""
    source = f"""
@tl.kernel(warps=1)
{header}
    a = tl.load(x, [0, 0], [4, 8])
    {names}
    u = {body}
"""
    filename = f"<bad {abs(hash(source))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope = {"tl": tl}
    exec(compile(source, filename, "exec"), scope)
    with pytest.raises(tl.TileLangError, match=match) as caught:
        scope["bad"].specialize()
    assert caught.value.loc is not None and caught.value.loc.line == 6


# -- moving nothing where the layouts allow ---------------------------------------------

#: [32, 32] over 128 threads, column = 16·l0 + 4·t + l1: the column halves are the
#: outermost local digit, so each thread holds its elements of both halves.
HALVES = local(1, 2).spatial(32, 4).local(1, 4)


@tl.kernel(warps=4)
def scale_left_half(
    x: tl.Tensor["DT", 32, 32], y: tl.Tensor["DT", 32, 32], DT: tl.constexpr = tl.f32
):
    whole = tl.load(x, [0, 0], [32, 32], layout=HALVES)
    left, right = tl.split(whole, 2)
    tl.store(y, [0, 0], tl.concat([left * 2.0, right], axis=1))


def shared_traffic(thread_fn: t.ThreadFunction) -> list[t.Stmt]:
    return [
        s
        for s in t.walk_stmts(thread_fn.body)
        if isinstance(s, t.SharedStore | t.SharedLoad | t.Barrier)
    ]


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_concatenating_the_halves_split_cut_along_local_digits_moves_no_data(dtype):
    x = np.arange(32 * 32).reshape(32, 32).astype(NATIVE[dtype])
    expected = x.copy()
    expected[:, :16] *= 2
    dt = tl.dtype(dtype)
    assert np.array_equal(scale_left_half(x, np.zeros_like(x), DT=dt), expected)
    assert np.array_equal(scale_left_half.interpret(x, np.zeros_like(x), DT=dt), expected)
    build = scale_left_half.compile(DT=dt)
    assert "shared_relayout" not in dict(build.thread.stats)
    assert shared_traffic(build.thread) == []
    (joined,) = [i for i in walk(build.stages["infer_layouts"]) if isinstance(i, ir.Concat)]
    assert joined.result.type.layout == HALVES
    assert all(v.type.layout == spatial(32, 4).local(1, 4) for v in joined.values)


@pytest.mark.usefixtures("disassembler")
def test_the_concat_of_split_halves_has_no_shared_memory_or_barrier_in_sass():
    ops = opcodes(disassemble(scale_left_half.compile(target="sm_90", DT=tl.f16).cubin))
    shared = [op for op in ops if op.split(".")[0] in ("STS", "LDS", "LDSM", "BAR")]
    assert shared == []
    assert any(op.startswith("STG") for op in ops)  # the kernel is really there


@tl.kernel(warps=4)
def two_products(
    x: tl.Tensor[tl.f16, 64, 32],
    w: tl.Tensor[tl.f16, 32, 64],
    v: tl.Tensor[tl.f16, 32, 64],
    y: tl.Tensor[tl.f32, 64, 128],
):
    a = tl.load(x, [0, 0], [64, 32])
    p = tl.dot(a, tl.load(w, [0, 0], [32, 64]), tl.zeros([64, 64], tl.f32))
    q = tl.dot(a, tl.load(v, [0, 0], [32, 64]), tl.zeros([64, 64], tl.f32))
    tl.store(y, [0, 0], tl.concat([p, q], axis=1))


def test_concatenating_two_dot_results_relabels_their_accumulator_registers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 32)).astype(np.float16)
    w, v = (rng.standard_normal((32, 64)).astype(np.float16) for _ in range(2))
    out = two_products(x, w, v, np.zeros((64, 128), np.float32))
    wide = x.astype(np.float64)
    np.testing.assert_allclose(out, np.hstack([wide @ w, wide @ v]), rtol=1e-5, atol=1e-4)
    build = two_products.compile()
    assert "shared_relayout" not in dict(build.thread.stats)
    (joined,) = [i for i in walk(build.stages["infer_layouts"]) if isinstance(i, ir.Concat)]
    parts = {value.type.layout for value in joined.values}
    assert len(parts) == 1 and joined.result.type.layout == local(1, 2) * parts.pop()


@tl.kernel(warps=2)
def concat_columns(
    x: tl.Tensor["DT", 8, 3],
    y: tl.Tensor["DT", 8, 5],
    z: tl.Tensor["DT", 8, 8],
    DT: tl.constexpr = tl.f32,
):
    parts = [tl.load(x, [0, 0], [8, 3]), tl.load(y, [0, 0], [8, 5])]
    tl.store(z, [0, 0], tl.concat(parts, axis=-1))


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8", "u4"])
def test_parts_no_thread_holds_move_through_one_shared_round_trip(dtype):
    rng = np.random.default_rng(2)
    x = random_values(dtype, 24, rng).reshape(8, 3)
    y = random_values(dtype, 40, rng).reshape(8, 5)
    dt, z = tl.dtype(dtype), np.zeros((8, 8), x.dtype)
    args = (as_tensor(x, dtype), as_tensor(y, dtype), as_tensor(z, dtype))
    for out in (concat_columns(*args, DT=dt), concat_columns.interpret(*args, DT=dt)):
        assert np.array_equal(as_numpy(out, dtype), np.hstack([x, y]))
    build = concat_columns.compile(DT=dt)
    assert dict(build.thread.stats).get("shared_relayout") == 1
    barriers = [s for s in shared_traffic(build.thread) if isinstance(s, t.Barrier)]
    assert len(barriers) == 2  # before writing the parts, before reading the result


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_concats_compile_for_the_gpu_with_no_spills(arch):
    in_registers = scale_left_half.compile(target=arch, DT=tl.f16)
    through_shared = concat_columns.compile(target=arch)
    for build in (in_registers, through_shared):
        resources = build.resources
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
        assert resources.registers > 0


# -- the text form and the verifier -----------------------------------------------------


def test_a_concat_prints_and_parses_back():
    fn = concat_kernel([(2, 4), (3, 4)], axis=0, warps=1).specialize(DT=tl.f16)
    text = print_function(fn)
    assert "concat " in text and "axis(0)" in text
    assert print_function(parse_function(text)) == text


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("axis(0) :", "axis(1) :"), r"every value of value 0's shape except along axis 1"),
        (("axis(0) :", "axis(2) :"), r"an axis in 0..1 .* found 2"),
        (("tile<f16, [5, 4]>", "tile<f16, [6, 4]>"), r"a result of shape \[5, 4\]"),
    ],
)
def test_the_verifier_rejects_a_malformed_concat(edit, match):
    fn = concat_kernel([(2, 4), (3, 4)], axis=0, warps=1).specialize(DT=tl.f16)
    text = print_function(fn)
    lines = [line for line in text.splitlines() if " = concat " in line]
    assert len(lines) == 1 and edit[0] in lines[0]
    broken = text.replace(lines[0], lines[0].replace(*edit))
    with pytest.raises(IRVerifyError, match=match):
        verify(parse_function(broken))


# -- errors at the user's line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("tl.concat([a, h], axis=1)", "tile 1 is f16, tile 0 is f32"),
        ("tl.concat([a, b], axis=0)", r"tile 1 has shape \[4, 4\], tile 0 \[4, 8\]"),
        ("tl.concat([a, c], axis=1)", r"tile 1 has shape \[4, 8, 1\], tile 0 \[4, 8\]"),
        ("tl.concat([a, b], axis=2)", r"the axis of tl.concat must be in -2..1 .* got 2"),
        ("tl.concat(a, axis=0)", "tl.concat takes a list of tiles, got"),
        ("tl.concat([], axis=0)", "needs at least one tile"),
        ("tl.concat([a, 1.0])", "tile 1 of tl.concat must be a tile"),
        ("tl.concat([a, b], axis=k)", "the axis of tl.concat must be known at compile time"),
        ("tl.concat([tl.sum(a), tl.sum(a)], axis=0)", "tile 0 has rank 0"),
    ],
)
def test_bad_concats_are_reported_at_the_users_line(body, match):
    header = "def bad(x: tl.Tensor[tl.f32, 4, 8], k: tl.i32):"
    assert_reported_at_line_6(
        header, "b, h, c = a[:, :4], a.to(tl.f16), a[:, :, None]", body, match
    )


def test_join_and_concat_are_in_the_library_namespace():
    from tilelang.lang.api import tl as library

    assert library.join is tl.join and library.concat is tl.concat

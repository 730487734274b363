"""`tl.associative_scan` (issue 12): a scan with a `@tl.func` combine over one tile or a
tuple of tiles, on the interpreter (sequential from the start of the axis), the CPU
backend (the same thread IR the GPU gets: runs in registers, lanes by shuffles, warps
through shared memory, or a fold through shared memory) and numpy; a chunked Mamba-style
linear recurrence h = a·h + b that stays finite where the log-space closed form
overflows; compiles for sm_80 and sm_90 without spills; errors at the user's line."""

import inspect

import numpy as np
import pytest

import tilelang as tl
from tilelang import TileLangError
from tilelang.ir.checks import IRVerifyError
from tilelang.ir.parser import parse_function
from tilelang.ir.verify import verify

# --------------------------------------------------------------------------- combines


@tl.func
def add(a, b):
    return a + b


@tl.func
def maximum(a, b):
    return tl.maximum(a, b)


@tl.func
def affine(left, right):
    """(a1, b1) ⊕ (a2, b2): h -> a2·(a1·h + b1) + b2, the linear recurrence h = a·h + b."""
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


@tl.func
def one(left, right):
    (x,) = left
    (y,) = right
    return (x + y,)


@tl.func
def sum_max_argmax(left, right):
    """(running sum, running max, index of its first occurrence)."""
    s1, m1, i1 = left
    s2, m2, i2 = right
    later = m2 > m1
    return s1 + s2, tl.where(later, m2, m1), tl.where(later, i2, i1)


@tl.func
def twice_plus(a, b):
    return a * 2 + b  # not associative: pins the interpreter's order


COMBINES = {"sum": add, "max": maximum}
NUMPY = {"sum": np.add, "max": np.maximum}


@tl.kernel(warps=4)
def scan2d(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.i32,
    OP: tl.constexpr = "sum",
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
    AXIS: tl.constexpr = 1,
    R: tl.constexpr = False,
):
    tile = tl.load(x, [0, 0], [BM, BN])
    tl.store(y, [0, 0], tl.associative_scan(COMBINES[OP], tile, axis=AXIS, reverse=R))


def reference(x: np.ndarray, op: str, axis: int, reverse: bool) -> np.ndarray:
    ufunc = NUMPY[op]
    if reverse:
        return np.flip(ufunc.accumulate(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return ufunc.accumulate(x, axis=axis, dtype=x.dtype)


def data(dtype, shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == tl.i32:  # the whole range: sums wrap
        return rng.integers(-(2**31), 2**31, shape, dtype=np.int64).astype(np.int32)
    return (rng.standard_normal(shape) * 10).astype(np.float32)


def both(kernel, inputs, outputs, **constexprs):
    compiled = kernel(*inputs, *(o.copy() for o in outputs), **constexprs)
    interpreted = kernel.interpret(*inputs, *(o.copy() for o in outputs), **constexprs)
    return compiled, interpreted


# (BM, BN, axis) -> the path the lowering takes for that layout (4 warps, blocked layouts)
LAYOUTS = [
    ((128, 4, 1), "scan_shuffle"),  # the axis in each thread's registers only
    ((4, 64, 1), "scan_shuffle"),  # registers, then lanes of one warp
    ((2, 512, 1), "scan_warps"),  # registers, lanes, then 4 warps through shared memory
    ((64, 8, 0), "scan_warps"),  # lanes and warps, one element per thread
    ((256, 4, 0), "scan_shared"),  # a register digit above the thread digit: a fold
]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("dtype", [tl.i32, tl.f32], ids=str)
def test_interpreter_cpu_backend_and_numpy_agree(dtype, op, layout, reverse):
    (bm, bn, axis), path = layout
    x = data(dtype, (bm, bn), hash((bm, bn, op)) % 1000)
    constexprs = dict(T=dtype, OP=op, BM=bm, BN=bn, AXIS=axis, R=reverse)
    assert scan2d.compile(**constexprs).stats.get(path) == 1
    compiled, interpreted = both(scan2d, [x], [np.zeros_like(x)], **constexprs)
    with np.errstate(over="ignore"):
        expected = reference(x, op, axis, reverse)
    if dtype == tl.i32 or op == "max":  # exact: every order gives the same result
        assert np.array_equal(interpreted, expected)
        assert np.array_equal(compiled, expected)
    else:  # f32 sums associate differently: within n roundings of the running magnitude
        scale = reference(np.abs(x).astype(np.float64), "sum", axis, reverse)
        bound = x.shape[axis] * 2.0**-23 * scale + 1e-30
        assert np.all(np.abs(interpreted - expected) <= bound)
        assert np.all(np.abs(compiled - interpreted) <= bound)


@tl.kernel(warps=4)
def scan_and_cumsum(
    x: tl.Tensor[tl.i32, "M", "N"],
    y: tl.Tensor[tl.i32, "M", "N"],
    z: tl.Tensor[tl.i32, "M", "N"],
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
    AXIS: tl.constexpr = 1,
    R: tl.constexpr = False,
):
    tile = tl.load(x, [0, 0], [BM, BN])
    tl.store(y, [0, 0], tl.associative_scan(add, tile, axis=AXIS, reverse=R))
    tl.store(z, [0, 0], tl.cumsum(tile, axis=AXIS, reverse=R))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", [c[0] for c in LAYOUTS], ids=str)
def test_cumsum_through_associative_scan_equals_tl_cumsum(layout, reverse):
    bm, bn, axis = layout
    x = data(tl.i32, (bm, bn), bm * bn)
    zeros = np.zeros_like(x)
    for run in (scan_and_cumsum, scan_and_cumsum.interpret):
        y, z = run(x, zeros.copy(), zeros.copy(), BM=bm, BN=bn, AXIS=axis, R=reverse)
        assert np.array_equal(y, z)


# --------------------------------------------------------------------------- tuples


@tl.kernel(warps=4)
def scan_tuple(
    x: tl.Tensor[tl.i32, "M", "N"],
    s: tl.Tensor[tl.i32, "M", "N"],
    m: tl.Tensor[tl.i32, "M", "N"],
    i: tl.Tensor[tl.i32, "M", "N"],
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
    AXIS: tl.constexpr = 1,
    K: tl.constexpr = 3,
):
    tile = tl.load(x, [0, 0], [BM, BN])
    if K == 1:
        (total,) = tl.associative_scan(one, (tile,), axis=AXIS)
        tl.store(s, [0, 0], total)
    else:
        index = tl.broadcast(tl.arange(0, BN)[None, :], [BM, BN])
        if AXIS == 0:
            index = tl.broadcast(tl.arange(0, BM)[:, None], [BM, BN])
        total, best, where = tl.associative_scan(sum_max_argmax, (tile, tile, index), axis=AXIS)
        tl.store(s, [0, 0], total)
        tl.store(m, [0, 0], best)
        tl.store(i, [0, 0], where)


@pytest.mark.parametrize("layout", [c[0] for c in LAYOUTS], ids=str)
def test_tuples_of_one_and_three_tiles(layout):
    bm, bn, axis = layout
    x = np.random.default_rng(bm).integers(-50, 50, (bm, bn)).astype(np.int32)
    outputs = [np.zeros_like(x) for _ in range(3)]
    expected_sum = np.cumsum(x, axis=axis, dtype=np.int32)
    expected_max = np.maximum.accumulate(x, axis=axis)
    moved = np.moveaxis(x, axis, -1)
    first = np.zeros(moved.shape, np.int32)  # the index of the first running maximum
    for k in range(1, moved.shape[-1]):
        later = moved[..., k] > np.max(moved[..., :k], axis=-1)
        first[..., k] = np.where(later, k, first[..., k - 1])
    expected_index = np.moveaxis(first, -1, axis)
    for run in (scan_tuple, scan_tuple.interpret):
        s, m, i = run(x, *(o.copy() for o in outputs), BM=bm, BN=bn, AXIS=axis)
        assert np.array_equal(s, expected_sum)
        assert np.array_equal(m, expected_max)
        assert np.array_equal(i, expected_index)
        alone = run(x, *(o.copy() for o in outputs), BM=bm, BN=bn, AXIS=axis, K=1)
        assert np.array_equal(alone, expected_sum)


@tl.kernel(warps=4)
def narrow(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f16,
    AXIS: tl.constexpr = 1,
    R: tl.constexpr = False,
):
    tile = tl.load(x, [0, 0], [8, 64])
    tl.store(y, [0, 0], tl.associative_scan(add, tile, axis=AXIS, reverse=R))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [tl.i8, tl.i64, tl.f16], ids=str)
def test_dtypes_that_are_not_32_bits_go_through_shared_memory(dtype, reverse):
    rng = np.random.default_rng(3)
    if dtype == tl.f16:
        x = rng.uniform(-4, 4, (8, 64)).astype(np.float16)
    else:
        info = np.iinfo(np.dtype(str(dtype).replace("i", "int")))
        x = rng.integers(info.min, info.max, (8, 64), endpoint=True).astype(info.dtype)
    assert narrow.compile(T=dtype, R=reverse).stats.get("scan_shared") == 1
    compiled, interpreted = both(narrow, [x], [np.zeros_like(x)], T=dtype, R=reverse)
    if dtype == tl.f16:  # each addition rounds to f16, in another grouping
        expected = reference(x.astype(np.float64), "sum", 1, reverse)
        assert np.abs(compiled.astype(np.float64) - expected).max() < 0.5
        assert np.abs(interpreted.astype(np.float64) - expected).max() < 0.5
    else:  # integers wrap at their width, in any grouping
        with np.errstate(over="ignore"):
            expected = reference(x, "sum", 1, reverse)
        assert np.array_equal(compiled, expected) and np.array_equal(interpreted, expected)


@tl.kernel(warps=1)
def ordered(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"], R: tl.constexpr = False):
    tl.store(y, [0], tl.associative_scan(twice_plus, tl.load(x, [0], [8]), reverse=R))


def test_the_interpreter_combines_sequentially_from_the_start_of_the_axis():
    x = np.arange(1, 9, dtype=np.int32)
    forward, backward = [], []
    acc = None
    for v in x:
        acc = v if acc is None else 2 * acc + v
        forward.append(acc)
    acc = None
    for v in x[::-1]:
        acc = v if acc is None else 2 * acc + v
        backward.append(acc)
    y = ordered.interpret(x, np.zeros_like(x))
    assert y.tolist() == forward
    assert ordered.interpret(x, np.zeros_like(x), R=True).tolist() == backward[::-1]


@tl.kernel(warps=4)
def recurrence2d(
    a: tl.Tensor[tl.f32, "M", "N"],
    b: tl.Tensor[tl.f32, "M", "N"],
    h: tl.Tensor[tl.f32, "M", "N"],
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
    AXIS: tl.constexpr = 1,
    R: tl.constexpr = False,
):
    ta, tb = tl.load(a, [0, 0], [BM, BN]), tl.load(b, [0, 0], [BM, BN])
    tl.store(h, [0, 0], tl.associative_scan(affine, (ta, tb), axis=AXIS, reverse=R)[1])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", [c[0] for c in LAYOUTS], ids=str)
def test_a_combine_that_does_not_commute_in_every_path(layout, reverse):
    """h_i = a_i·h_{i-1} + b_i (reverse: h_i = a_i·h_{i+1} + b_i): the order of the
    operands matters, in registers, across lanes, across warps and in the fold."""
    bm, bn, axis = layout
    rng = np.random.default_rng(bm + bn)
    a = rng.uniform(-1.2, 1.2, (bm, bn)).astype(np.float32)
    b = rng.standard_normal((bm, bn)).astype(np.float32)
    moved_a, moved_b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    h = np.zeros(moved_a.shape, np.float64)
    state = np.zeros(moved_a.shape[:-1])
    steps = range(moved_a.shape[-1])
    for i in reversed(steps) if reverse else steps:
        state = moved_a[..., i] * state + moved_b[..., i]
        h[..., i] = state
    expected = np.moveaxis(h, -1, axis)
    constexprs = dict(BM=bm, BN=bn, AXIS=axis, R=reverse)
    compiled, interpreted = both(recurrence2d, [a, b], [np.zeros_like(a)], **constexprs)
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(interpreted - expected).max() <= 1e-5 * scale
    assert np.abs(compiled - expected).max() <= 1e-5 * scale


# --------------------------------------------------------------------------- Mamba


@tl.kernel(warps=4)
def chunked_recurrence(
    u: tl.Tensor[tl.f32, "D", "L"],
    delta: tl.Tensor[tl.f32, "D", "L"],
    A: tl.Tensor[tl.f32, "D", 1],
    h: tl.Tensor[tl.f32, "D", "L"],
    BD: tl.constexpr = 4,
    BL: tl.constexpr = 128,
):
    """h_t = exp(Δ_t·A)·h_{t-1} + Δ_t·u_t per channel (Mamba-1 with N = 1, B = C = 1),
    chunk by chunk along L: a scan of the pairs (a, b) = (exp(Δ·A), Δ·u) per chunk, then
    the chunk's carry-in h through the scanned decay."""
    bd = tl.blocks(tl.cdiv(D, BD))
    rate = tl.load(A, [bd * BD, 0], [BD, 1])
    carry = tl.zeros([BD, 1], tl.f32)
    for start in tl.range(0, L, BL):
        dt = tl.load(delta, [bd * BD, start], [BD, BL])  # 0 past the end: a = 1, b = 0
        a = tl.exp(dt * rate)
        b = dt * tl.load(u, [bd * BD, start], [BD, BL])
        decay, local = tl.associative_scan(affine, (a, b), axis=1)
        state = decay * carry + local
        tl.store(h, [bd * BD, start], state)
        carry = state[:, BL - 1 :]


def sequential(u, delta, A):
    """The recurrence step by step in float64."""
    h = np.zeros(u.shape, np.float64)
    state = np.zeros(u.shape[0])
    for t in range(u.shape[1]):
        state = np.exp(delta[:, t] * A[:, 0]) * state + delta[:, t] * u[:, t]
        h[:, t] = state
    return h


def log_space(u, delta, A, chunk):
    """The closed form the cumulative-sum scans allow, in f32: within a chunk
    h_t = e^{S_t}·(h_in + Σ_{s≤t} e^{-S_s}·Δ_s·u_s), S = cumsum(Δ·A). e^{-S} overflows."""
    h = np.zeros(u.shape, np.float32)
    carry = np.zeros((u.shape[0], 1), np.float32)
    with np.errstate(all="ignore"):
        for start in range(0, u.shape[1], chunk):
            dt, x = delta[:, start : start + chunk], u[:, start : start + chunk]
            s = np.cumsum(dt * A, axis=1, dtype=np.float32)
            inner = np.cumsum(np.exp(-s) * dt * x, axis=1, dtype=np.float32)
            h[:, start : start + chunk] = np.exp(s) * (carry + inner)
            carry = h[:, start + chunk - 1 : start + chunk]
    return h


def mamba_inputs(d: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((d, length)).astype(np.float32)
    delta = rng.uniform(0.0, 1.0, (d, length)).astype(np.float32)
    A = -rng.uniform(1.0, 20.0, (d, 1)).astype(np.float32)  # Δ·|A| up to 20
    return u, delta, A


@pytest.mark.parametrize(
    "case",
    [(4, 128, 10, 300), (2, 512, 2, 1000), (4, 128, 5, 1)],
    ids=["lanes", "warps", "length-1"],
)
def test_chunked_mamba_recurrence_stays_finite_and_matches_a_sequential_loop(case):
    bd, bl, d, length = case
    u, delta, A = mamba_inputs(d, length)
    expected = sequential(u, delta, A)
    out = np.zeros_like(u)
    compiled, interpreted = both(chunked_recurrence, [u, delta, A], [out], BD=bd, BL=bl)
    for got in (compiled, interpreted):
        assert np.isfinite(got).all()
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    if length > bl:  # the closed form in log space overflows on the same inputs
        closed = log_space(u, delta, A, bl)
        assert not np.isfinite(closed).all()


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_compiles_for_sm80_and_sm90_without_spills(arch):
    builds = [
        chunked_recurrence.compile(target=arch),
        chunked_recurrence.compile(target=arch, BD=2, BL=512),
        scan2d.compile(target=arch, T=tl.f32, BM=2, BN=512, AXIS=1, R=True),
        scan2d.compile(target=arch, BM=256, BN=4, AXIS=0),
        scan_tuple.compile(target=arch, BM=64, BN=8, AXIS=0),
    ]
    for build in builds:
        resources = build.resources
        assert resources.registers > 0
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    source = builds[1].source
    assert "shfl.sync.up" in source and "__syncthreads()" in source  # lanes, then warps


# --------------------------------------------------------------------------- errors


def plain_add(a, b):
    return a + b


@tl.func
def returns_one(left, right):
    return left[0] + right[0]


@tl.func
def returns_float(a, b):
    return a.to(tl.f64) + b.to(tl.f64)


@tl.func
def branches(a, b):
    c = b
    if a > b:
        c = a
    return c


@tl.kernel(warps=4)
def mistakes(x: tl.Tensor[tl.f32, "N"], WHICH: tl.constexpr = "plain"):
    t = tl.load(x, [0], [64])
    if WHICH == "plain":
        tl.associative_scan(plain_add, t)  # <- error
    elif WHICH == "builtin":
        tl.associative_scan(tl.maximum, t)  # <- error
    elif WHICH == "structure":
        tl.associative_scan(returns_one, (t, t))  # <- error
    elif WHICH == "scalar":
        tl.associative_scan(add, 1.0)  # <- error
    elif WHICH == "shapes":
        tl.associative_scan(affine, (t, tl.load(x, [0], [32])))  # <- error
    elif WHICH == "dtype":
        tl.associative_scan(returns_float, t)  # <- error
    elif WHICH == "branch":
        tl.associative_scan(branches, t)  # <- error
    elif WHICH == "axis":
        tl.associative_scan(add, t, axis=1)  # <- error
    elif WHICH == "packed":
        tl.associative_scan(add, t.to(tl.u4))  # <- error
    elif WHICH == "arity":
        tl.associative_scan(affine, t)  # <- error


@pytest.mark.parametrize(
    "which, fragment",
    [
        ("plain", "combines with a @tl.func function"),
        ("builtin", "decorate the combine function with @tilelang.func"),
        ("structure", "must return a tuple of 2 scalars (one per scanned tile)"),
        ("scalar", "scans tiles: the value is float 1.0"),
        ("shapes", "tiles of one shape: value 0 is [64], value 1 is [32]"),
        ("dtype", "its result should be f32, got a scalar of dtype f64"),
        ("branch", "may compute on scalars only; it emits if"),
        ("axis", "axis 1 is out of range for a tile of rank 1"),
        ("packed", "value 0 is u4 (convert it with .to())"),
        ("arity", "cannot unpack"),
    ],
)
def test_mistakes_are_reported_at_the_users_line(which, fragment):
    with pytest.raises(TileLangError) as caught:
        mistakes.specialize(WHICH=which)
    error = caught.value
    if which == "arity":  # inside the combine function: at its line
        lines, first = inspect.getsourcelines(affine.fn)
        assert first < error.loc.line < first + len(lines), str(error)
    else:
        lines, first = inspect.getsourcelines(mistakes.fn)
        marked = [first + i for i, line in enumerate(lines) if "# <- error" in line]
        assert error.loc is not None and error.loc.line in marked, str(error)
        assert f'"{which}"' in lines[error.loc.line - first - 1], str(error)
    assert fragment in str(error), str(error)


MUL = "%m = mul %a, %c"
SCAN_TEXT = """kernel k(%x: tensor<f32, [N]>) sizes(%N: i32) warps(1) {{
  %bx = blocks 1:i32 : i32
  %t = load %x[0:i32] : tile<f32, [32]>
  %u = load %x[0:i32] : tile<f32, [{n}]>
  %s, %s2 = associative_scan %t, %u axis({axis}) lhs(%a: f32, %b: f32) rhs(%c: f32, %d: {rhs}) -> (tile<f32, [32]>, tile<f32, [{n}]>) loc("user.py":7:5) {{
    {body} : f32
    yield %m, %{last}
  }}
}}
"""


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(n=16), "expected every value of one shape [32], found value 1"),
        (dict(axis=1), "expected an axis in 0..0, found 1"),
        (dict(rhs="i32"), "expected rhs of the values' element types (f32, f32), found f32, i32"),
        (dict(last="x"), "expected the combine body to yield the values' element types"),
        (dict(body="%m = load %x[0:i32]"), "to compute on scalars only (compute, cast, full)"),
    ],
)
def test_the_verifier_says_what_is_wrong_at_the_scans_line(changes, fragment):
    fields = dict(n=32, axis=0, rhs="f32", last="d", body=MUL) | changes
    fn = parse_function(SCAN_TEXT.format(**fields))
    with pytest.raises(IRVerifyError) as caught:
        verify(fn)
    assert str(caught.value).startswith("user.py:7:5: associative_scan: "), str(caught.value)
    assert fragment in str(caught.value)


def test_the_text_form_round_trips_and_verifies():
    fn = parse_function(SCAN_TEXT.format(n=32, axis=0, rhs="f32", last="d", body=MUL))
    verify(fn)
    from tilelang.ir.printer import print_function

    assert parse_function(print_function(fn)) == fn
    reversed_text = print_function(fn).replace("axis(0)", "axis(0) reverse")
    assert parse_function(reversed_text).body.instrs[3].reverse

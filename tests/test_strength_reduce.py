"""strength_reduce (thread IR) and the lowering's addresses of loops, as laws.

* The thread IR after `strength_reduce` computes the same bits as before it: both run on
  the CPU backend (the program the GPU runs, minus its last step) on the same inputs.
* What it does: a register a loop multiplies by one constant gets a product register
  (and only then); the loop-invariant terms of a global offset are summed before the loop.
* A pipelined loop never divides: its stages are carried, so neither the thread IR nor
  the SASS of the loop computes a remainder by the stage count.
* A mask that is the same for a whole box (offset and size multiples of its extent) is
  block-uniform; otherwise it compares each element's index.
"""

import numpy as np
import pytest
from conftest import load_example, require_disassembler

import tilelang as tl
from tilelang import dtypes as d
from tilelang.ir import thread as t
from tilelang.ir.parser import parse_function
from tilelang.lowering import lower
from tilelang.passes import strength_reduce, thread_cleanup
from tilelang.pipeline import lower_function, run_pipeline
from tilelang.runtime import sass
from tilelang.runtime.arguments import bind_arguments
from tilelang.runtime.buffers import byte_buffers
from tilelang.runtime.cpu import compile_cpu
from tilelang.target import CPU

quant = load_example("quant_matmul")
matmul = load_example("matmul")


def thread_before_and_after(kernel, assume, **constexprs):
    """The kernel's block IR and its thread IR before and after `strength_reduce`."""
    fn = kernel.compile(assume=assume, **constexprs).stages["plan_registers"]
    before = thread_cleanup.run(lower(fn, CPU))
    return fn, before, strength_reduce.run(before)


def run(fn, thread: t.ThreadFunction, arrays: dict) -> dict:
    """`thread` on the CPU backend; the arrays after the launch."""
    bound = bind_arguments(fn, arrays)
    buffers, write_back = byte_buffers(bound.tensors, bound.stored)
    compile_cpu(thread).launch({**buffers, **bound.scalars, **bound.sizes})
    write_back()
    for tensor in bound.tensors.values():
        tensor.finish()
    return arrays


def raw(value) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.asarray(value.data)


def assert_same_bits(fn, before, after, make_arrays) -> dict:
    expected, found = run(fn, before, make_arrays()), run(fn, after, make_arrays())
    for name in expected:
        assert np.array_equal(raw(expected[name]).view(np.uint8), raw(found[name]).view(np.uint8))
    return found


def the_loop(thread: t.ThreadFunction) -> t.For:
    return next(s for s in t.walk_stmts(thread.body) if isinstance(s, t.For))


def quant_arrays(m, k, n, weight_type, group=128, split_k=None, **tiles):
    """Inputs of the quantized matmul (y zeroed), or of its deterministic split-K (the
    workspace, zeroed counters and y)."""
    x, w, s = quant.make_inputs(m, k, n, weight_type, group, seed=3)
    packed = quant.pack_weights(w, **tiles)

    def make():
        arrays = {"x": x.copy(), "w": packed, "s": s.copy()}
        if split_k is None:
            return {**arrays, "y": np.zeros((m, n), np.float16)}
        tiles_m = -(-m // tiles.get("BM", quant.BLOCK_M))
        tiles_n = -(-n // tiles.get("BN", quant.BLOCK_N))
        return {
            **arrays,
            "partials": np.zeros((split_k, m, n), np.float32),
            "counts": np.zeros((tiles_m, tiles_n), np.int32),
            "y": np.zeros((m, n), np.float16),
        }

    return make


@pytest.mark.parametrize("weight_type", [tl.u4, tl.u3, tl.f4e2m1], ids=str)
def test_the_quantized_matmul_computes_the_same_bits(weight_type):
    # M = 3: the activations' rows are masked per element; K, N multiples of the tiles
    fn, before, after = thread_before_and_after(
        quant.quant_matmul, {"M": 1, "K": 128, "N": 128}, WT=weight_type, G=128
    )
    found = assert_same_bits(fn, before, after, quant_arrays(3, 384, 256, weight_type))
    x, w, s = quant.make_inputs(3, 384, 256, weight_type, 128, seed=3)
    expected = quant.reference(x, w, s, 128).astype(np.float32)
    scale = max(float(np.abs(expected).max()), 1e-3)
    error = float(np.abs(found["y"].astype(np.float32) - expected).max()) / scale
    assert error <= quant.tolerance(384)


def test_split_k_slices_from_the_block_index_compute_the_same_bits():
    # the loop's bounds come from the block index: a loop no host can bound (the
    # deterministic partial products: atomic additions would add in any order)
    kernel = quant.quant_matmul_partials
    fn, before, after = thread_before_and_after(
        kernel, {"M": 1, "K": 128, "N": 128}, WT=tl.u4, G=128, SPLIT_K=3
    )
    assert_same_bits(fn, before, after, quant_arrays(2, 640, 128, tl.u4, split_k=3))


def test_the_matmul_without_size_facts_computes_the_same_bits():
    fn, before, after = thread_before_and_after(matmul.matmul, None)
    rng = np.random.default_rng(7)
    a = rng.integers(-3, 4, (70, 100)).astype(np.float16)
    b = rng.integers(-3, 4, (100, 90)).astype(np.float16)

    def make():
        return {"a": a.copy(), "b": b.copy(), "c": np.zeros((70, 90), np.float16)}

    found = assert_same_bits(fn, before, after, make)
    assert np.array_equal(found["c"], (a.astype(np.float64) @ b).astype(np.float16))


@tl.kernel(warps=1)
def strided_sum(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "M"], STEP: tl.constexpr = 3):
    """y[0:32] = sum over i of x[32·c_i : 32·c_i + 32], c_0 = 0, c_{i+1} = c_i + STEP: a
    scalar the loop carries, and multiplies by one constant (32) for its offset."""
    tl.blocks(1)
    acc = tl.zeros([32], tl.f32)
    c = 0
    for _ in tl.range(0, M):
        acc = acc + tl.load(x, [c * 32], [32])
        c = c + STEP
    tl.store(y, [0], acc)


def test_a_register_the_loop_multiplies_by_one_constant_gets_a_product_register():
    fn, before, after = thread_before_and_after(strided_sum, None)
    # one more register, and the loop reads it where it read the carried one times 32
    (product,) = set(after.locals) - set(before.locals)
    assert product.count == 1 and product.dtype == d.i32

    def products(thread):
        return [
            e
            for s in t.walk_stmts(the_loop(thread).body)
            for top in t.stmt_exprs(s)
            for e in t.walk_expr(top)
            if isinstance(e, t.Binary) and e.op in ("mul", "shl") and isinstance(e.a, t.Read)
        ]

    assert products(before) and not products(after)
    assert any(isinstance(s, t.SetLocal) and s.local == product.name for s in after.body)
    x = np.arange(32 * 40, dtype=np.float32)

    def make():
        return {"x": x.copy(), "y": np.zeros(12, np.float32)}

    found = assert_same_bits(fn, before, after, make)
    starts = [32 * 3 * i for i in range(12)]
    expected = sum(x[s : s + 32] if s + 32 <= x.size else np.zeros(32) for s in starts)
    assert np.array_equal(found["y"], np.asarray(expected, np.float32)[:12])


def test_a_register_multiplied_by_several_constants_keeps_its_products():
    _, before, after = thread_before_and_after(quant.quant_matmul, "all", WT=tl.u4, G=128)
    # the stage indices scale by the three buffers' strides: no product register
    assert after.locals == before.locals


def test_the_loop_invariant_terms_of_global_offsets_are_summed_before_the_loop():
    _, _, after = thread_before_and_after(quant.quant_matmul, "all", WT=tl.u4, G=128)
    loop = the_loop(after)
    hoisted = {s.name.name for s in after.body[: after.body.index(loop)] if isinstance(s, t.Let)}
    in_loop = {s.name.name for s in t.walk_stmts(loop.body) if isinstance(s, t.Let)}
    copies = [s for s in t.walk_stmts(loop.body) if isinstance(s, t.CpAsync)]
    assert {c.tensor for c in copies} == {"x", "w", "s"}
    bases = {}
    for copy in copies:
        # (base + what the loop moves) + a constant, the base a name bound before the loop
        base, moving = split(copy.offset)
        assert base.name in hoisted
        assert {e.name for e in t.walk_expr(moving) if isinstance(e, t.Name)} & (
            in_loop | {loop.var.name}
        )
        bases.setdefault(copy.tensor, set()).add(base)
    # each thread's four 16-byte copies of w share their base (immediates apart)
    assert len(bases["w"]) == 1


def split(offset: t.Expr) -> tuple[t.Name, t.Expr]:
    """(base, varying part) of an offset `base + varying (+ constant)`."""
    if isinstance(offset, t.Binary) and isinstance(offset.b, t.Imm):
        offset = offset.a
    assert isinstance(offset, t.Binary) and offset.op == "add", offset
    assert isinstance(offset.a, t.Name), offset
    return offset.a, offset.b


def test_a_pipelined_loop_never_divides():
    compiled = matmul.matmul.compile(target="sm_90")
    loop = the_loop(compiled.thread)
    ops = {
        e.op
        for s in t.walk_stmts(loop.body)
        for top in t.stmt_exprs(s)
        for e in t.walk_expr(top)
        if isinstance(e, t.Binary)
    }
    assert not ops & {"div", "rem"}
    require_disassembler()
    text = sass.main_loop(sass.disassemble(compiled.cubin))
    # a division by a constant is a multiply by its magic inverse (by 3: 0x55555556)
    assert text is not None and "HMMA" in text
    assert not any(magic in text.lower() for magic in ("0x55555556", "0xaaaaaaab"))


BOX = """kernel k(%x: tensor<f32, [M, N]>, %y: tensor<f32, [M, N]>) sizes(%M: i32, %N: i32) warps(1){facts} {{
  %bm, %bn = blocks 4:i32, 4:i32 : i32, i32
  %r = mul %bm, 8:i32 : i32
  %c = mul %bn, 64:i32 : i32
  %a = load %x[%r, %c] : tile<f32, [8, 64], spatial(8, 4).local(1, 16)>
  store %y[%r, %c], %a
}}
"""


@pytest.mark.parametrize(
    ("facts", "shape", "uniform"),
    [(" assume(M % 8, N % 64)", (24, 192), True), ("", (30, 200), False)],
)
def test_a_mask_is_block_uniform_when_the_box_is_whole_in_or_out(facts, shape, uniform):
    fn = parse_function(BOX.format(facts=facts))
    thread = lower_function(run_pipeline(fn)["plan_registers"])
    lets = {s.name.name: s.value for s in t.walk_stmts(thread.body) if isinstance(s, t.Let)}

    def varying(e: t.Expr) -> bool:
        for sub in t.walk_expr(e):
            if isinstance(sub, t.ThreadIndex | t.Read):
                return True
            if isinstance(sub, t.Name) and sub.name in lets and varying(lets[sub.name]):
                return True
        return False

    preds = [s.pred for s in t.walk_stmts(thread.body) if isinstance(s, t.GlobalLoad)]
    assert preds and all(p is not None for p in preds)
    assert all(not varying(p) for p in preds) == uniform
    # the 4 x 4 boxes cover the tensor: y is x, where boxes stick out (30 x 200) or not
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    arrays = run(fn, thread, {"x": x, "y": np.zeros_like(x)})
    assert np.array_equal(arrays["y"], x)

"""The DSL: what compiles to what, and that it runs as Python would suggest."""

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.lowering import LoweringError


def instrs(kernel, **constexprs) -> list[ir.Instr]:
    return list(walk(kernel.specialize(**constexprs)))


def kinds(kernel, **constexprs) -> list[str]:
    return [type(i).__name__ for i in instrs(kernel, **constexprs)]


def test_constexpr_loop_unrolls_and_constexpr_if_prunes():
    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"], R: tl.constexpr = 3, DOUBLE: tl.constexpr = False):
        t = tl.load(x, [0], [8])
        for _ in range(R):
            t = t + 1
        if DOUBLE:
            t = t * 2
        tl.store(x, [0], t)

    assert kinds(k).count("Compute") == 3 and "For" not in kinds(k) and "If" not in kinds(k)
    assert kinds(k, R=1, DOUBLE=True).count("Compute") == 2
    x = np.arange(8, dtype=np.int32)
    k(x, R=2, DOUBLE=True)
    assert np.array_equal(x, (np.arange(8) + 2) * 2)


def test_runtime_if_yields_assigned_names():
    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"], flag: tl.i32):
        t = tl.load(x, [0], [4])
        if flag > 0:
            t = t + 10
            extra = 1
        else:
            t = t - 10
            extra = 2
        tl.store(x, [0], t * extra)

    branch = next(i for i in instrs(k) if isinstance(i, ir.If))
    assert [r.name.split("_")[0] for r in branch.results] == ["t", "extra"]
    x = np.zeros(4, np.int32)
    k.interpret(x, 1)
    assert np.all(x == 10)
    k.interpret(x, 0)
    assert np.all(x == 0)  # (10 - 10) * 2
    for run in (k, k.interpret):
        x = np.zeros(4, np.int32)
        run(x, 1)
        run(x, 1)
        assert np.all(x == 20)  # (0 + 10) * 1, then (10 + 10) * 1
        run(x, 0)
        assert np.all(x == 20)  # (20 - 10) * 2


def test_runtime_loop_carries_python_numbers_as_scalars():
    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"]):
        count = 0
        for _ in tl.range(0, N, 4):
            count = count + 1
        tl.store(x, [0], tl.full([1], count, tl.i32))

    loop = next(i for i in instrs(k) if isinstance(i, ir.For))
    assert len(loop.carried) == 1 and isinstance(loop.inits[0], ir.Const)
    for run in (k, k.interpret):
        x = np.zeros(10, np.int32)
        run(x)
        assert x[0] == 3


def test_helper_functions_inline_and_return():
    @tl.func
    def clamp_add(t, amount, LIMIT):
        return tl.minimum(t + amount, LIMIT)

    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"]):
        tl.store(x, [0], clamp_add(tl.load(x, [0], [8]), 5, 9))

    assert "Func" not in str(kinds(k))
    x = np.arange(8, dtype=np.int32)
    k(x)
    assert np.array_equal(x, np.minimum(np.arange(8) + 5, 9))


def test_tile_indexing_with_none_broadcasts():
    @tl.kernel
    def outer(a: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, "N", "N"]):
        v = tl.load(a, [0], [8])
        tl.store(out, [0, 0], v[:, None] * v[None, :])

    a = np.arange(1, 9, dtype=np.float32)
    out = outer(a, np.zeros((8, 8), np.float32))
    assert np.array_equal(out, np.outer(a, a))


def test_shape_of_tensor_and_scalar_params():
    @tl.kernel
    def fill(out: tl.Tensor[tl.f32, "R", "C"], value: tl.f32):
        rows, cols = out.shape
        b = tl.blocks(rows)
        tl.store(out, [b, 0], tl.full([1, 16], value, tl.f32) + (cols * 0).to(tl.f32))

    out = fill(np.zeros((5, 16), np.float32), 2.5)
    assert np.all(out == 2.5)


def test_print_reaches_interpreter_hook(capsys):
    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"]):
        t = tl.load(x, [0], [4])
        tl.print("tile", t)

    k.interpret(np.arange(4, dtype=np.int32))
    out = capsys.readouterr().out
    with pytest.raises(LoweringError, match=r"test_lang.py:\d+:\d+: print runs in"):
        k(np.arange(4, dtype=np.int32))  # the compiled path says what it cannot do, and where
    assert "tile" in out and "[0 1 2 3]" in out


def test_shared_memory_round_trip():
    @tl.kernel
    def k(x: tl.Tensor[tl.f16, "N"], y: tl.Tensor[tl.f16, "N"]):
        buffer = tl.shared([32], tl.f16)
        tl.copy_async(buffer, x, [0])
        tl.commit()
        tl.wait(0)
        tl.sync()
        buffer.store(buffer.load() * 2)
        tl.store(y, [0], buffer.load())

    x = np.arange(20, dtype=np.float16)
    assert np.array_equal(k.interpret(x, np.zeros(20, np.float16)), x * 2)
    assert np.array_equal(k(x, np.zeros(20, np.float16)), x * 2)


def test_view_reinterprets_row_bits():
    @tl.kernel
    def split(x: tl.Tensor[tl.u8, "N"], y: tl.Tensor[tl.u4, "N2"]):
        tl.store(y, [0], tl.load(x, [0], [4]).view(tl.u4))

    y = split(np.array([0x21, 0x43, 0x65, 0x87], np.uint8), tl.pack(np.zeros(8, int), tl.u4))
    assert list(y.unpack()) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_kernel_call_returns_tuple_for_several_outputs_and_ir_text():
    @tl.kernel
    def two(x: tl.Tensor[tl.f32, "N"], a: tl.Tensor[tl.f32, "N"], b: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [4])
        tl.store(a, [0], t + 1)
        tl.store(b, [0], tl.exp2(t))

    x = np.arange(4, dtype=np.float32)
    a, b = two(x, np.zeros(4, np.float32), np.zeros(4, np.float32))
    assert np.array_equal(a, x + 1) and np.array_equal(b, 2**x)
    text = two.ir()
    assert text.startswith("kernel two(") and "exp2" in text

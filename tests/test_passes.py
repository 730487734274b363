"""Block-IR passes, as text in / text out, and the pipeline with its IR dump."""

import numpy as np
import pytest
from conftest import load_example

import tilelang as tl
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import verify
from tilelang.passes import simplify, software_pipeline, thread_cleanup
from tilelang.pipeline import PIPELINE, run_pipeline
from tilelang.runtime import interpreter
from tilelang.runtime.arguments import bind_arguments


def simplified(body: str) -> str:
    """The body text (no kernel header) of `body` after simplify."""
    text = f"kernel k(%x: tensor<i32, [N]>) sizes(%N: i32) warps(1) {{\n{body}}}\n"
    out = print_function(simplify.run(parse_function(text)))
    return "\n".join(line.strip() for line in out.splitlines()[1:-1])


def test_folds_constants_with_c_semantics():
    out = simplified(
        "  %bx = blocks 1:i32 : i32\n"
        "  %a = div -7:i32, 2:i32 : i32\n"
        "  %b = rem -7:i32, 2:i32 : i32\n"
        "  %c = shl 1:i32, 40:i32 : i32\n"
        "  %d = shr -8:i32, 99:i32 : i32\n"
        "  %e = add 2147483647:i32, 1:i32 : i32\n"
        "  %t = full 0:i32 : tile<i32, [4]>\n"
        "  %u = add %t, %a : tile<i32, [4]>\n"
        "  %v = add %u, %b : tile<i32, [4]>\n"
        "  %w = add %v, %c : tile<i32, [4]>\n"
        "  %y = add %w, %d : tile<i32, [4]>\n"
        "  %z = add %y, %e : tile<i32, [4]>\n"
        "  store %x[0:i32], %z\n"
    )
    assert "%u = add %t, -3:i32" in out  # truncating division
    assert "%v = add %u, -1:i32" in out  # remainder takes the dividend's sign
    assert "%w = add %v, 0:i32" in out  # shift past the width gives 0
    assert "%y = add %w, -1:i32" in out  # arithmetic shift fills with the sign
    assert "%z = add %y, -2147483648:i32" in out  # wraps


def test_identities_and_division_by_zero_kept():
    out = simplified(
        "  %bx = blocks 1:i32 : i32\n"
        "  %a = add %N, 0:i32 : i32\n"
        "  %b = mul 1:i32, %a : i32\n"
        "  %c = div %b, 0:i32 : i32\n"
        "  %t = full %c : tile<i32, [4]>\n"
        "  store %x[%b], %t\n"
    )
    assert out.splitlines() == [
        "%bx = blocks 1:i32 : i32",
        "%c = div %N, 0:i32 : i32",
        "%t = full %c : tile<i32, [4]>",
        "store %x[%N], %t",
    ]


def test_shares_repeated_scalars_only_where_in_scope():
    out = simplified(
        "  %bx = blocks 4:i32 : i32\n"
        "  for %i = 0:i32 to %N step 1:i32 {\n"
        "    %a = mul %bx, 16:i32 : i32\n"
        "    %b = mul %bx, 16:i32 : i32\n"
        "    %t = full %a : tile<i32, [4]>\n"
        "    store %x[%b], %t\n"
        "    yield\n"
        "  }\n"
        "  %c = mul %bx, 16:i32 : i32\n"
        "  %u = full %c : tile<i32, [4]>\n"
        "  store %x[%c], %u\n"
    )
    assert out.count("mul %bx, 16:i32") == 2  # once in the loop, once after it
    assert "store %x[%a], %t" in out


def test_every_example_same_result_after_the_pipeline():
    vector_add, softmax = load_example("vector_add").vector_add, load_example("softmax").softmax
    quant = load_example("quant_matmul")
    x = np.random.default_rng(0).standard_normal((9, 77)).astype(np.float32)
    # exp and the order of the sums differ between numpy and the compiled code
    np.testing.assert_allclose(
        softmax.interpret(x, np.empty_like(x), BN=32),
        softmax(x, np.empty_like(x), BN=32),
        rtol=1e-6,
    )
    v = x.reshape(-1)
    assert np.array_equal(
        vector_add.interpret(v, v, np.empty_like(v)), vector_add(v, v, np.empty_like(v))
    )
    a, w, s = quant.make_inputs(5, 200, 40, tl.u3, 32)
    y1 = quant.quant_matmul.interpret(a, w, s, np.zeros((5, 40), np.float16), WT=tl.u3, G=32)
    y2 = quant.quant_matmul(a, w, s, np.zeros((5, 40), np.float16), WT=tl.u3, G=32)
    scale = np.abs(y1.astype(np.float32)).max()
    assert (
        np.abs(y1.astype(np.float32) - y2.astype(np.float32)).max() <= quant.tolerance(200) * scale
    )


def test_dump_writes_ir_after_every_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_DUMP_IR", str(tmp_path))
    fn = load_example("matmul").matmul.specialize(BK=16)
    stages = run_pipeline(fn)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        f"matmul.{i:02d}.{n}.ir" for i, n in enumerate(["frontend", *[p for p, _ in PIPELINE]])
    ]
    for name, stage in stages.items():
        dumped = next(tmp_path.glob(f"*.{name}.ir")).read_text()
        assert parse_function(dumped) == stage


def test_kernel_ir_names_unknown_stage():
    matmul = load_example("matmul").matmul
    assert "dot" in matmul.ir("simplify")
    with pytest.raises(
        ValueError, match="no IR stage 'lower'; the stages are frontend, verify, simplify"
    ):
        matmul.ir("lower")


PIPELINED = """kernel k(%x: tensor<f16, [M, K]>, %y: tensor<f16, [M, 32]>) sizes(%M: i32, %K: i32) warps(1) {
  %bx = blocks 1:i32 : i32
  %z = full 0.0:f16 : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>
  %out = for %k = 0:i32 to %K step 32:i32 iter(%acc: tile<f16, [16, 32], spatial(4, 8).local(4, 4)> = %z) stages(3) {
    %col = mul %k, 1:i32 : i32
    %a = load %x[0:i32, %col] : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>
    %b = relayout %a : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>
    %s = add %acc, %b : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>
    yield %s
  }
  store %y[0:i32, 0:i32], %out
}
"""


def test_pipeline_turns_a_relayouted_load_into_staged_async_copies():
    fn = software_pipeline.run(parse_function(PIPELINED))
    verify(fn)
    lines = [line.strip() for line in print_function(fn).splitlines()]
    assert lines[3] == "%a.smem.p1 = shared_alloc : shared<f16, [3, 16, 32]>"
    # two copies ahead of the loop, at k = 0 and k = 32
    prologue = [
        line for line in lines[: lines.index(next(x for x in lines if x.startswith("%out")))]
    ]
    assert sum(line.startswith("copy_async %x[0:i32, %col") for line in prologue) == 2
    assert prologue.count("async_commit") == 2
    body = lines[lines.index(next(x for x in lines if x.startswith("%out"))) :]
    assert "async_wait 1" in body and "sync" in body
    assert any(
        line.startswith("%b = shared_load %a.stage.p1 : tile<f16, [16, 32], spatial(4, 8)")
        for line in body
    )
    assert not any(line.startswith("%a = load") or "relayout" in line for line in body)
    assert lines[-3] == "async_wait 0"
    # the data the loop reads is the data it read before
    x = np.random.default_rng(1).standard_normal((16, 100)).astype(np.float16)
    results = []
    for function in (parse_function(PIPELINED), fn):
        y = np.zeros((16, 32), np.float16)
        bound = bind_arguments(function, {"x": x, "y": y})
        interpreter.run(function, bound.tensors, bound.scalars, bound.sizes)
        for tensor in bound.tensors.values():
            tensor.finish()
        results.append(y)
    assert np.array_equal(results[0], results[1])


def test_pipeline_leaves_a_loop_without_stages_alone():
    text = PIPELINED.replace(" stages(3)", "")
    assert software_pipeline.run(parse_function(text)) == parse_function(text)


def test_thread_cleanup_shares_index_arithmetic_and_drops_dead_names():
    from tilelang import dtypes as d
    from tilelang.ir import thread as t

    a, b, dead = t.Name("a", d.i32), t.Name("b", d.i32), t.Name("dead", d.i32)
    value = t.Binary("mul", t.ThreadIndex(), t.Imm(4, d.i32))
    fn = t.ThreadFunction(
        "k",
        (t.Param("x", d.i32, True),),
        32,
        (t.Imm(1, d.i32),),
        0,
        (t.Local("r", d.i32, 1),),
        (
            t.Let(a, value),
            t.Let(b, value),
            t.Let(dead, t.Binary("add", a, b)),
            t.GlobalStore("x", t.Cvt(b, d.i64), t.Reg("r", 0), 4),
        ),
    )
    cleaned = thread_cleanup.run(fn)
    assert cleaned.body == (t.Let(a, value), t.GlobalStore("x", t.Cvt(a, d.i64), t.Reg("r", 0), 4))

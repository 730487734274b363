"""Block-IR passes, as text in / text out, and the pipeline with its IR dump."""

import warnings

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
from tilelang.target import target


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
    w = quant.pack_weights(w)
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


def body_lines(fn) -> list[str]:
    """The printed lines of `fn` without the kernel header, stripped, without locations."""
    return [line.split("  loc(")[0].strip() for line in print_function(fn).splitlines()[1:-1]]


def loop_split(lines: list[str]) -> tuple[list[str], list[str]]:
    """(the lines before the first loop, the loop and what follows)."""
    start = next(n for n, line in enumerate(lines) if " for %" in line or line.startswith("for"))
    return lines[:start], lines[start:]


def run_text(fn, arrays: dict) -> dict:
    """`fn` run by the interpreter on copies of `arrays`; the arrays it wrote."""
    copies = {
        name: a.copy() if isinstance(a, np.ndarray) else tl.pack_codes(a.unpack(), a.dtype)
        for name, a in arrays.items()
    }
    bound = bind_arguments(fn, copies)
    interpreter.run(fn, bound.tensors, bound.scalars, bound.sizes)
    for tensor in bound.tensors.values():
        tensor.finish()
    return copies


def assert_same_results(before: str, after, arrays: dict) -> None:
    """The pipelined function computes what the function of `before` computes."""
    want, got = run_text(parse_function(before), arrays), run_text(after, arrays)
    for name, value in want.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, got[name]), name
        else:
            assert np.array_equal(value.unpack(), got[name].unpack()), name


ALIGNED = PIPELINED.replace("warps(1) {", "warps(1) assume(K % 128, M % 128) {")


def test_pipeline_turns_a_relayouted_load_into_staged_async_copies():
    fn = software_pipeline.run(parse_function(ALIGNED))
    verify(fn)
    prologue, rest = loop_split(body_lines(fn))
    # one stage: the 16x32 tile's default layout (64-byte rows: the 64-byte swizzle)
    assert prologue[2] == (
        "%a.smem.p1 = shared_alloc : shared<f16, [3, 16, 32], "
        "shared(3:512, 16:32, 32:1) ^ swizzle(2, 3, 6)>"
    )
    # two copies ahead of the loop, at k = 0 and k = 32, one commit group each
    copies = [line for line in prologue if line.startswith("copy_async %x[0:i32, %col")]
    assert len(copies) == 2 and all(line.endswith("{prologue=true}") for line in copies)
    assert prologue.count("async_commit") == 2
    # in the loop: wait, the stage read straight into the relayout's layout, the copy
    # two iterations ahead into the buffer read one iteration ago
    wait = rest.index("async_wait 1")
    assert rest[wait + 1] == "sync"
    read = next(n for n, line in enumerate(rest) if line.startswith("%b = shared_load"))
    assert rest[read].endswith("tile<f16, [16, 32], spatial(4, 8).local(4, 4)>")
    issue = next(n for n, line in enumerate(rest) if line.startswith("copy_async"))
    assert wait < read < issue and rest[issue].endswith("{ahead=2}")
    assert "%add.p2 = add %k, 64:i32 : i32" in rest
    # the loop carries the stage it reads (from 0) and the one it fills (the stage read
    # one iteration before, from S-1 = 2), and advances them without dividing
    assert "%stage.p1: i32 = 0:i32, %prev.p1: i32 = 2:i32) stages(3) {" in rest[0]
    assert "%stage.p2 = where %last.p1, 0:i32, %add.p1 : i32" in rest
    # every view of a stage states the buffer's layout, its stage dim sliced off
    stage = "shared(16:32, 32:1) ^ swizzle(2, 3, 6)"
    assert (
        f"%a.next.p3 = shared_slice %a.smem.p1[%prev.p1] : shared<f16, [16, 32], {stage}>" in rest
    )
    assert rest[rest.index("async_wait 0") - 2] == "yield %s, %stage.p2, %stage.p1"
    assert not any(" div " in line or " rem " in line for line in rest)
    assert not any(line.startswith("%a = load") or "relayout" in line for line in rest)
    assert rest[-2] == "async_wait 0"
    x = np.random.default_rng(1).standard_normal((16, 100)).astype(np.float16)
    assert_same_results(ALIGNED, fn, {"x": x, "y": np.zeros((16, 32), np.float16)})


def test_pipeline_prefetches_into_registers_what_cp_async_cannot_copy():
    # No size facts: K may be odd, so a row of x moves 2 bytes at a time (cp.async moves
    # 4, 8 or 16): the load is issued into registers two iterations ahead instead.
    fn = software_pipeline.run(parse_function(PIPELINED))
    verify(fn)
    prologue, rest = loop_split(body_lines(fn))
    assert [line.split(" = ")[0] for line in prologue if " = load " in line] == ["%a.p1", "%a.p2"]
    assert not any("shared" in line or "async" in line for line in prologue + rest)
    # the loop carries this iteration's tile (%a itself) and the next one
    assert "%a: tile<f16, [16, 32], spatial(16, 2).local(1, 16)> = %a.p1" in rest[0]
    assert "%a.ahead.p1: tile<f16, [16, 32], spatial(16, 2).local(1, 16)> = %a.p2" in rest[0]
    # the load two iterations ahead follows the last use of %a (they share registers)
    relayout = rest.index("%b = relayout %a : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>")
    load = next(n for n, line in enumerate(rest) if line.startswith("%a.next.p1 = load"))
    assert load == relayout + 3 and rest[load - 1] == "%col.p3 = mul %add.p1, 1:i32 : i32"
    assert rest[load].startswith("%a.next.p1 = load %x[0:i32, %col.p3] {ahead=2}")
    assert rest[-3] == "yield %s, %a.ahead.p1, %a.next.p1"
    x = np.random.default_rng(2).standard_normal((16, 101)).astype(np.float16)
    assert_same_results(PIPELINED, fn, {"x": x, "y": np.zeros((16, 32), np.float16)})


PACKED_CAST = """kernel k(%w: tensor<u4, [K, 64]>, %y: tensor<f16, [64, 64]>) sizes(%K: i32) warps(4) assume(K % 128) {
  %bx = blocks 1:i32 : i32
  %z = full 0.0:f16 : tile<f16, [64, 64], spatial(64, 2).local(1, 32)>
  %out = for %k = 0:i32 to %K step 64:i32 iter(%acc: tile<f16, [64, 64], spatial(64, 2).local(1, 32)> = %z) stages(2) {
    %q = load %w[%k, 0:i32] : tile<u4, [64, 64], spatial(64, 2).local(1, 32)>
    %h = cast %q : tile<f16, [64, 64], spatial(64, 2).local(1, 32)>
    %s = add %acc, %h : tile<f16, [64, 64], spatial(64, 2).local(1, 32)>
    yield %s
  }
  store %y[0:i32, 0:i32], %out
}
"""


def test_pipeline_copies_packed_sub_byte_tiles_that_feed_a_cast():
    fn = software_pipeline.run(parse_function(PACKED_CAST))
    verify(fn)
    prologue, rest = loop_split(body_lines(fn))
    # the codes, packed: 64 x 64 u4 are 2048 bytes a stage (32-byte rows, 32-byte swizzle)
    assert prologue[2] == (
        "%q.smem.p1 = shared_alloc : shared<u4, [2, 64, 64], "
        "shared(2:4096, 64:64, 64:1) ^ swizzle(1, 5, 8)>"
    )
    assert rest[rest.index("async_wait 0") + 1] == "sync"
    issue = next(n for n, line in enumerate(rest) if line.startswith("copy_async %w"))
    read = next(n for n, line in enumerate(rest) if line.startswith("%q = shared_load"))
    assert (
        issue < read
        and rest[read + 1] == "%h = cast %q : tile<f16, [64, 64], spatial(64, 2).local(1, 32)>"
    )
    assert rest[read].endswith(": tile<u4, [64, 64], spatial(64, 2).local(1, 32)>")
    assert rest[issue].endswith("{ahead=1}")
    codes = np.random.default_rng(3).integers(0, 16, (256, 64)).astype(np.uint8)
    arrays = {"w": tl.pack_codes(codes, tl.u4), "y": np.zeros((64, 64), np.float16)}
    assert_same_results(PACKED_CAST, fn, arrays)


HEADS = """kernel k(%x: tensor<f16, [B, N, 32]>, %y: tensor<f16, [B, 16, 32]>) sizes(%B: i32, %N: i32) warps(1) assume(B % 128, N % 128) {
  %bx = blocks %B : i32
  %z = full 0.0:f16 : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>
  %out = for %k = 0:i32 to %N step 16:i32 iter(%acc: tile<f16, [16, 32], spatial(4, 8).local(4, 4)> = %z) stages(3) {
    %a = load %x[%bx, %k, 0:i32] : tile<f16, [1, 16, 32], spatial(1, 16, 2).local(1, 1, 16)>
    %m = reshape %a : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>
    %b = relayout %m : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>
    %s = add %acc, %b : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>
    yield %s
  }
  %r = reshape %out : tile<f16, [1, 16, 32], spatial(1, 4, 8).local(1, 4, 4)>
  store %y[%bx, 0:i32, 0:i32], %r
}
"""


def test_pipeline_reads_a_rank3_load_through_reshape_and_relayout_from_one_stage():
    fn = software_pipeline.run(parse_function(HEADS))
    verify(fn)
    prologue, rest = loop_split(body_lines(fn))
    assert prologue[2].startswith("%a.smem.p1 = shared_alloc : shared<f16, [3, 1, 16, 32], ")
    # the stage, then its only row: the reshape dropped a leading dim of size 1
    stage = "shared(1:512, 16:32, 32:1) ^ swizzle(2, 3, 6)"
    row = "shared(16:32, 32:1) ^ swizzle(2, 3, 6)"
    assert (
        f"%a.stage.p1 = shared_slice %a.smem.p1[%stage.p1] : shared<f16, [1, 16, 32], {stage}>"
        in rest
    )
    assert f"%a.stage.p2 = shared_slice %a.stage.p1[0:i32] : shared<f16, [16, 32], {row}>" in rest
    assert "%b = shared_load %a.stage.p2 : tile<f16, [16, 32], spatial(4, 8).local(4, 4)>" in rest
    loop = rest[: rest.index("async_wait 0")]
    assert not any(" = load " in line or "reshape" in line or "relayout" in line for line in loop)
    x = np.random.default_rng(4).standard_normal((2, 80, 32)).astype(np.float16)
    assert_same_results(HEADS, fn, {"x": x, "y": np.zeros((2, 16, 32), np.float16)})


CARRIED = """kernel k(%x: tensor<f16, [M, K]>, %y: tensor<f16, [M, 32]>) sizes(%M: i32, %K: i32) warps(1) assume(K % 128, M % 128) {
  %bx = blocks 1:i32 : i32
  %z = full 0.0:f16 : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>
  %out, %c_out = for %k = 0:i32 to %K step 32:i32 iter(%acc: tile<f16, [16, 32], spatial(16, 2).local(1, 16)> = %z, %c: i32 = 0:i32) stages(2) loc("k.py":3:3) {
    %a = load %x[0:i32, %c] : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>  loc("k.py":4:7)
    %s = add %acc, %a : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>
    %c2 = add %c, 32:i32 : i32
    yield %s, %c2
  }
  store %y[0:i32, 0:i32], %out
}
"""


def test_pipeline_says_why_a_load_stays_where_it_is():
    with pytest.warns(software_pipeline.PipelineWarning) as caught:
        fn = software_pipeline.run(parse_function(CARRIED))
    why = "its offsets depend on %c, which the loop carries from one iteration to the next"
    assert [str(w.message) for w in caught] == [
        f"k.py:3:3: stages=2 is not honoured for the load of %x at k.py:4:7: {why}"
    ]
    (load,) = [line for line in body_lines(fn) if " = load " in line]
    assert load.endswith(
        f'{{unpipelined="{why}"}} : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>'
    )
    assert parse_function(print_function(fn)) == fn  # the decision survives the text form
    assert not any("async" in line or "shared" in line for line in body_lines(fn))


def test_pipeline_falls_back_to_registers_when_shared_memory_runs_out():
    tile = "tile<f16, [32, 256], spatial(32, 32).local(1, 8)>"
    text = (
        "kernel k(%x: tensor<f16, [K, 256]>, %y: tensor<f16, [32, 256]>) sizes(%K: i32) "
        "warps(32) assume(K % 128) {\n"
        "  %bx = blocks 1:i32 : i32\n"
        f"  %z = full 0.0:f16 : {tile}\n"
        f"  %out = for %k = 0:i32 to %K step 32:i32 iter(%acc: {tile} = %z) stages(4) {{\n"
        f"    %a = load %x[%k, 0:i32] : {tile}\n"
        f"    %b = load %x[%k, 0:i32] fill(1.0:f16) : {tile}\n"
        f"    %c = load %x[%k, 0:i32] : {tile}\n"
        f"    %s = add %a, %b : {tile}\n"
        f"    %t = add %s, %c : {tile}\n"
        f"    %u = add %acc, %t : {tile}\n"
        "    yield %u\n"
        "  }\n"
        "  store %y[0:i32, 0:i32], %out\n"
        "}\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything is pipelined: no warning
        fn = software_pipeline.run(parse_function(text), target("sm_86"))
    verify(fn)
    lines = body_lines(fn)
    # %a: 4 stages of 16 KiB take 64 of the 99 KiB of sm_86; %b has a fill and %c finds
    # no room left in shared memory: both go three iterations ahead in registers.
    assert [
        line.split(" = ")[0] for line in lines if line.startswith("%") and "shared_alloc" in line
    ] == ["%a.smem.p1"]
    assert sum(line.startswith("copy_async %x") and "{ahead=3}" in line for line in lines) == 1
    assert [line.split(" = ")[0] for line in lines if "{ahead=3}" in line and " load " in line] == [
        "%b.next.p1",
        "%c.next.p1",
    ]
    x = np.random.default_rng(5).standard_normal((200, 256)).astype(np.float16)
    assert_same_results(text, fn, {"x": x, "y": np.zeros((32, 256), np.float16)})


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

"""Block-IR passes, as text in / text out, and the pipeline with its IR dump."""

import numpy as np
import pytest
from conftest import load_example

import tilelang as tl
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.passes import simplify
from tilelang.passes.pipeline import PIPELINE, run_pipeline


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

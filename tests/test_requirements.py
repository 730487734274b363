"""A kernel's `assert` on runtime sizes and scalar parameters is a requirement the host
checks before every launch (`require` in the block IR, `ThreadFunction.checks` in the
thread IR): on the interpreter and the CPU backend alike, a launch whose arguments break
it fails with the assert's line, text and message and writes nothing; one that keeps it
runs. An assert the host cannot check before the launch is refused at its line."""

import numpy as np
import pytest
from conftest import assert_reported, assert_text_round_trips

import tilelang as tl
from tilelang.ir.checks import IRVerifyError


@tl.kernel(warps=4)
def row_sums(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "M"],
    scale: tl.f32,
    first: tl.i32,
    BN: tl.constexpr = 64,
):
    """y[m] = scale · the sum of row m of x from column `first` (one tile per row)."""
    assert N <= BN, "a row must fit one tile"
    assert scale > 0
    assert 0 <= first < N
    m = tl.blocks(M)
    row = tl.load(x, [m, first], [1, BN])  # columns past N read 0
    tl.store(y, [m], tl.sum(row, axis=1) * scale)


def _line(text: str) -> int:
    lines, first = __import__("inspect").getsourcelines(row_sums.fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


RUNS = {"compiled": row_sums, "interpreted": row_sums.interpret}


@pytest.mark.parametrize("path", RUNS)
def test_arguments_that_keep_every_assert_run(path):
    x = np.arange(3 * 40, dtype=np.float32).reshape(3, 40)
    got = RUNS[path](x, np.zeros(3, np.float32), 0.5, 4)
    np.testing.assert_array_equal(got, 0.5 * x[:, 4:].sum(axis=1))


@pytest.mark.parametrize("path", RUNS)
@pytest.mark.parametrize(
    "shape, scale, first, text",
    [
        ((3, 65), 1.0, 0, "assert N <= BN does not hold for these arguments: a row must fit"),
        ((3, 40), 0.0, 0, "assert scale > 0 does not hold"),
        ((3, 40), float("nan"), 0, "assert scale > 0 does not hold"),
        ((3, 40), 1.0, 40, "assert 0 <= first < N does not hold"),
        ((3, 40), 1.0, -1, "assert 0 <= first < N does not hold"),
    ],
)
def test_arguments_that_break_an_assert_fail_at_its_line_before_anything_runs(
    path, shape, scale, first, text
):
    y = np.full(shape[0], -7.0, np.float32)
    with pytest.raises(ValueError) as error:
        RUNS[path](np.ones(shape, np.float32), y, scale, first)
    message = str(error.value)
    assert text in message, message
    assert f":{_line(text.split(' does')[0].removeprefix('assert '))}:" in message
    np.testing.assert_array_equal(y, -7.0)  # no block ran


def test_a_requirement_is_in_the_block_ir_text_and_round_trips():
    function = row_sums.specialize()
    text = row_sums.ir()
    assert "require %" in text and '"assert N <= BN does not hold' in text
    assert_text_round_trips(function)


def test_requirements_are_launch_checks_of_the_gpu_builds():
    for target in ("sm_80", "sm_90a"):
        checks = row_sums.compile(target=target).thread.checks
        messages = [message for _, message in checks]
        assert any("assert N <= BN" in m for m in messages), messages
        assert any("assert 0 <= first < N" in m for m in messages), messages


def test_an_assert_on_a_tile_is_refused_at_its_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [8])
        assert t > 0  # <- error
        tl.store(x, [0], t)

    assert_reported(k, "assert needs one condition for the whole launch, got a tile")


def test_an_assert_under_a_runtime_branch_is_refused_at_its_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        b = tl.blocks(tl.cdiv(N, 8))
        if b > 0:
            assert N > 8  # <- error
        tl.store(x, [b * 8], tl.zeros([8], tl.f32))

    assert_reported(k, "checked before the launch", "before any runtime loop, branch")


def test_an_assert_on_a_block_index_is_refused_at_its_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        b = tl.blocks(tl.cdiv(N, 8))
        assert b < 4
        tl.store(x, [b * 8], tl.zeros([8], tl.f32))

    with pytest.raises(IRVerifyError, match="expected the condition to be known before the launch"):
        k.specialize()


def test_a_compile_time_assert_still_fails_while_compiling():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], B: tl.constexpr = 8):
        assert B % 16 == 0, "B is a multiple of 16"  # <- error
        tl.store(x, [0], tl.zeros([B], tl.f32))

    assert_reported(k, "compile-time assertion failed: B is a multiple of 16")


def test_tilelang_compile_refuses_a_float_requirement_naming_its_line(tmp_path, capsys):
    from tilelang.cli import main

    source = tmp_path / "scaled.py"
    source.write_text(
        "import tilelang as tl\n\n\n"
        "@tl.kernel(warps=1)\n"
        'def scaled(x: tl.Tensor[tl.f32, "N"], s: tl.f32):\n'
        '    assert s > 0, "positive"\n'
        "    b = tl.blocks(tl.cdiv(N, 32))\n"
        "    tl.store(x, [b * 32], tl.load(x, [b * 32], [32]) * s)\n"
    )
    assert main(["compile", f"{source}:scaled", "--arch", "cpu", "-o", str(tmp_path / "o")]) != 0
    error = capsys.readouterr().err
    # generated files name sources by a portable path (here, outside the working
    # directory: the file name), so the same source gives the same bytes anywhere
    assert f"launch check 0 ({source.name}:6:5)" in error
    assert "f32 cannot be emitted as C" in error

"""The `tilelang` command: the dtype table, layout pictures, and how errors are reported."""

import xml.etree.ElementTree as ET

import pytest

from tilelang import cli, dtypes


def test_dtypes_table_lists_every_named_type(capsys):
    assert cli.main(["dtypes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[2:]]
    assert names == [t.name for t in dtypes.NAMED_TYPES]
    f4 = next(line.split() for line in lines if line.startswith("f4e2m1 "))
    assert f4[1:] == ["4", "float", "-6", "6", "0.5", "0.5"]


def test_layout_writes_svg(tmp_path, capsys):
    out = tmp_path / "c.svg"
    assert cli.main(["layout", "local(2,1).spatial(8,4).local(1,2)", "--out", str(out)]) == 0
    assert "32 threads x 4 locals" in capsys.readouterr().out
    root = ET.parse(out).getroot()
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "31:3" in texts and "0:0" in texts


def test_layout_syntax_error_is_reported_with_column(capsys):
    assert cli.main(["layout", "local(2,1).spatial(8,4"]) == 1
    err = capsys.readouterr().err
    assert "column 23" in err and "expected" in err


def test_layout_picture_needs_known_suffix(tmp_path, capsys):
    code = cli.main(["layout", "spatial(4)", "--out", str(tmp_path / "x.bmp")])
    assert code == 1
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("expr", ["spatial(2, 2)", "column_spatial(4, 8).local(1, 2)"])
def test_layout_svg_matches_cli_picture(expr, tmp_path):
    from tilelang.ir.layout_parser import parse_layout
    from tilelang.ir.picture import layout_svg

    out = tmp_path / "l.svg"
    cli.main(["layout", expr, "--out", str(out)])
    assert out.read_text() == layout_svg(parse_layout(expr))


def test_inspect_prints_every_stage_and_the_machine_code(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    assert (
        cli.main(
            ["inspect", "examples/quant_matmul.py:quant_matmul", "--arch", "sm_80", "-D", "WT=u4"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for title in (
        "IR after infer_layouts",
        "IR after pipeline",
        "IR after lower",
        "CUDA source (sm_80)",
        "PTX",
        "resources (ptxas)",
    ):
        assert f"==== {title}" in out
    assert "spill stores 0 B" in out
    assert "mma=" in out and "dequant_vector=" in out


def test_inspect_one_pass_and_clear_errors(capsys):
    assert (
        cli.main(["inspect", "examples/matmul.py:matmul", "--pass", "vectorize", "-D", "BK=16"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("==== IR after vectorize ====") and "vector=16" in out
    assert cli.main(["inspect", "examples/matmul.py:nope"]) == 1
    assert "has no kernel 'nope' (its kernels: matmul)" in capsys.readouterr().err
    assert cli.main(["inspect", "examples/matmul.py:matmul", "--pass", "nope"]) == 1
    assert "no pass 'nope'" in capsys.readouterr().err


def test_main_loop_is_the_largest_backward_branch():
    from tilelang.runtime.sass import main_loop, opcodes

    sass = "\n".join(
        [
            "        /*0000*/  MOV R1, c[0x0][0x28] ;",
            ".L_x_0:",
            "        /*0010*/  HMMA.16816.F32 R4, R8, R12, R4 ;",
            "        /*0020*/  LDSM.16.M88.4 R8, [R2] ;",
            "        /*0030*/  @!P0 BRA `(.L_x_0) ;",
            ".L_x_1:",
            "        /*0040*/  STG.E [R2.64], R4 ;",
            "        /*0050*/  BRA `(.L_x_1);",
        ]
    )
    loop = main_loop(sass)
    assert opcodes(loop) == {"HMMA.16816.F32": 1, "LDSM.16.M88.4": 1, "BRA": 1}
    assert main_loop("        /*0000*/  EXIT ;") is None


BUGGY = """import tilelang as tl


@tl.kernel
def wrong(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor["WT", "N"], WT: tl.constexpr = tl.f16):
    tl.store(y, [0], tl.load(x, [0], [16]))
"""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile", "{file}:wrong", "--arch", "cpu", "-o", "{out}"],
         "buggy.py:6:5: error: storing a f32 tile into y"),
        (["inspect", "{file}:wrong"], "buggy.py:6:5: error: storing a f32 tile into y"),
        (["inspect", "{file}:wrong", "-D", "WT=banana"], "constexpr parameter WT expects a dtype"),
        (["compile", "{file}:wrong", "-D", "WT=banana", "--arch", "cpu", "-o", "{out}"],
         "constexpr parameter WT expects a dtype"),
    ],
    ids=["compile", "inspect", "inspect -D", "compile -D"],
)  # fmt: skip
def test_a_kernel_error_is_one_message_at_the_users_line_not_a_traceback(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path / "cache"))
    file = tmp_path / "buggy.py"
    file.write_text(BUGGY)
    args = [a.format(file=file, out=tmp_path / "out") for a in argv]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tilelang {argv[0]}: error: ")
    assert message in err and "Traceback" not in err
    if "6:5" in message:  # the source line and its caret follow
        lines = err.splitlines()
        assert lines[1].strip() == "tl.store(y, [0], tl.load(x, [0], [16]))"
        assert lines[2].strip().startswith("^^^")


def test_compile_help_lists_every_architecture_the_command_accepts(capsys):
    from tilelang.target import TARGETS

    with pytest.raises(SystemExit):
        cli.main(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    gpus = [name for name, t in TARGETS.items() if t.is_gpu]
    assert "sm_100" in gpus and "sm_120" in gpus
    assert f"{', '.join(gpus)} or cpu" in text

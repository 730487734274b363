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


# --------------------------------------------------------------------------- loading kernels


def test_a_kernel_file_inside_a_package_loads_with_its_relative_imports():
    from pathlib import Path

    import tilelang as tl

    attention = Path(tl.__file__).parent / "kernels" / "attention.py"  # `from .common import`
    kernel = cli.load_kernel(f"{attention}:flash_attention_kernel")
    by_module = cli.load_kernel("tilelang.kernels.attention:flash_attention_kernel")
    assert kernel is by_module  # the package's own module, not a second copy


PACKAGE = {
    "__init__.py": "",
    "sizes.py": "BLOCK = 128\n",
    "kern.py": """import tilelang as tl

from .sizes import BLOCK


@tl.kernel(warps=1)
def scaled(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, "N"], TWICE: tl.constexpr = False):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    values = tl.load(x, [b * BLOCK], [BLOCK])
    tl.store(out, [b * BLOCK], values * (2.0 if TWICE else 1.0))
""",
}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package `mypkg` in its own folder (importable by module name from there)."""
    import sys

    root = tmp_path / "src"
    (root / "mypkg").mkdir(parents=True)
    for name, text in PACKAGE.items():
        (root / "mypkg" / name).write_text(text)
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    yield root
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]


@pytest.mark.parametrize("form", ["file", "module"])
def test_compile_takes_a_package_file_or_a_module_name(package, tmp_path, form, capsys):
    import json

    spec = f"{package / 'mypkg' / 'kern.py'}:scaled" if form == "file" else "mypkg.kern:scaled"
    if form == "module":
        import sys

        sys.path.insert(0, str(package))
    out = tmp_path / "out"
    assert cli.main(["compile", spec, "--arch", "cpu", "-o", str(out)]) == 0, capsys.readouterr()
    entry = json.loads((out / "manifest.json").read_text())["kernels"][0]
    assert entry["kernel"] == "scaled" and entry["constexprs"] == {"TWICE": False}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("import no_such_module_anywhere\n", "ModuleNotFoundError: No module named"),
        ("from . import sibling\n", "ImportError: attempted relative import"),
        ("def broken(:\n", "SyntaxError"),
        ("raise RuntimeError('the module refuses to load')\n", "RuntimeError: the module refuses"),
    ],
    ids=["missing import", "relative import", "syntax error", "raises"],
)
def test_a_file_that_does_not_load_is_one_clean_error(tmp_path, capsys, text, expected):
    source = tmp_path / "bad.py"
    source.write_text(text)
    for command in (["compile", f"{source}:k", "--arch", "cpu", "-o", str(tmp_path)],
                    ["inspect", f"{source}:k"]):  # fmt: skip
        assert cli.main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"tilelang {command[0]}: error: cannot load {source}: ")
        assert expected in err and "Traceback" not in err


def test_an_unknown_module_is_named(capsys):
    assert cli.main(["inspect", "tilelang.kernels.no_such_kernels:k"]) == 1
    assert "no such file or module: tilelang.kernels.no_such_kernels" in capsys.readouterr().err


# --------------------------------------------------------------------------- -D values


@pytest.mark.parametrize(
    ("given", "expected"),
    [("True", True), ("true", True), ("1", True), ("False", False), ("false", False), ("0", False)],
)
def test_a_bool_constexpr_takes_every_usual_spelling(package, tmp_path, given, expected):
    import json

    out = tmp_path / "out"
    spec = f"{package / 'mypkg' / 'kern.py'}:scaled"
    assert cli.main(["compile", spec, "-D", f"TWICE={given}", "--arch", "cpu", "-o", str(out)]) == 0
    entry = json.loads((out / "manifest.json").read_text())["kernels"][0]
    assert entry["constexprs"] == {"TWICE": expected}


def test_a_bool_constexpr_names_the_spellings_it_takes(package, tmp_path, capsys):
    spec = f"{package / 'mypkg' / 'kern.py'}:scaled"
    assert cli.main(["compile", spec, "-D", "TWICE=yes", "--arch", "cpu", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "-D TWICE" in err and "True, False, true, false, 1 or 0, got 'yes'" in err

"""The `tilelang` command: data types, layout pictures, kernel inspection, the cache, compile."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _format_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def dtype_table() -> str:
    """The table of every named data type, one row per type, aligned columns."""
    from tilelang import dtypes

    header = ("name", "bits", "kind", "min", "max", "eps", "min subnormal")
    rows = [header]
    for t in dtypes.NAMED_TYPES:
        if t.is_float:
            kind = "float"
            extra = (_format_number(t.eps), _format_number(t.smallest_subnormal))
        else:
            kind = "signed int" if t.signed else "unsigned int"
            extra = ("-", "-")
        rows.append(
            (t.name, str(t.bits), kind, _format_number(t.min), _format_number(t.max), *extra)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cmd_dtypes(_: argparse.Namespace) -> int:
    print(dtype_table())
    return 0


def _cmd_layout(args: argparse.Namespace) -> int:
    from tilelang.ir.layout_parser import parse_layout
    from tilelang.ir.picture import save_layout_picture

    layout = parse_layout(args.expr)
    print(
        f"{layout}: shape {list(layout.shape)}, {layout.num_threads} threads x {layout.num_locals} locals"
    )
    if args.out:
        save_layout_picture(layout, args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    # Deferred like every command's imports: `tilelang dtypes` need not load the runtime.
    from tilelang.runtime.cache import DiskCache

    cache = DiskCache()
    if args.action == "clear":
        return _clear_cache(cache)
    from tilelang.tuning.records import BLOB, describe

    entries = cache.entries()
    for entry in entries:
        if entry.problem is None and BLOB in entry.names:
            blobs = cache.get(entry.key) or {}
            line = describe(blobs) or "autotune record (unreadable)"
            print(f"{entry.key[:16]}  {entry.size:>10,} bytes  {line}")
        elif entry.problem is None:
            built = _build_of(cache, entry) if "meta" in entry.names else ""
            print(f"{entry.key[:16]}  {entry.size:>10,} bytes  {', '.join(entry.names)}{built}")
        else:
            print(f"{entry.key[:16]}  {entry.size:>10,} bytes  unreadable: {entry.problem}")
    total = sum(e.size for e in entries)
    unreadable = sum(e.problem is not None for e in entries)
    detail = f" ({unreadable} unreadable)" if unreadable else ""
    print(f"{len(entries)} entries{detail}, {total:,} bytes in {cache.root}")
    return 0


def _build_of(cache, entry) -> str:
    """The "  (KERNEL for TARGET)" of a compiled kernel's meta blob, or "" when it does not
    say (an older entry, or one that is not a build)."""
    import json

    try:
        meta = json.loads((cache.get(entry.key) or {}).get("meta", b"{}"))
    except ValueError:
        return ""
    if not isinstance(meta, dict):
        return ""
    name, target = meta.get("kernel", meta.get("symbol")), meta.get("target", meta.get("arch"))
    return f"  ({name} for {target})" if isinstance(name, str) and isinstance(target, str) else ""


def _clear_cache(cache) -> int:
    cleared = cache.clear()
    print(f"removed {cleared.removed} entries from {cache.root}")
    for path, reason in cleared.failed:
        print(f"could not remove {path}: {reason}", file=sys.stderr)
    return 1 if cleared.failed else 0


def load_kernel(spec: str):
    """The kernel `NAME` of `FILE:NAME` (a Python file) or `MODULE:NAME` (an importable
    module, ``tilelang.kernels.attention:flash_attention_kernel``). A file inside a
    package (a folder with ``__init__.py``) is imported as that package's module, so its
    relative imports work; any failure to load is a `ValueError` that says why."""
    from tilelang.kernel import Kernel

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"expected FILE:KERNEL or MODULE:KERNEL, got {spec!r}")
    module = _load_module(where)
    kernel = getattr(module, name, None)
    if not isinstance(kernel, Kernel):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, Kernel))
        raise ValueError(
            f"{where} has no kernel {name!r} (its kernels: {', '.join(found) or 'none'})"
        )
    return kernel


def _load_module(where: str):
    """The module a FILE or MODULE of `load_kernel` names, loaded."""
    import importlib
    from pathlib import Path

    from tilelang.kernel import TileLangError

    path = Path(where)
    is_file = where.endswith(".py") or "/" in where or "\\" in where or path.is_file()
    if is_file and not path.is_file():
        raise ValueError(f"no such file: {where}")
    if not is_file and not all(part.isidentifier() for part in where.split(".")):
        raise ValueError(f"{where!r} is neither a Python file nor a module name")
    try:
        return _load_file(path) if is_file else importlib.import_module(where)
    except TileLangError:
        raise  # a kernel's own error: it names the user's line already
    except ModuleNotFoundError as error:
        if not is_file and error.name is not None and f"{where}.".startswith(f"{error.name}."):
            raise ValueError(f"no such file or module: {where}") from None
        raise ValueError(f"cannot load {where}: {_reason(error)}") from None
    except (Exception, SystemExit) as error:  # the user's module: whatever it raises
        raise ValueError(f"cannot load {where}: {_reason(error)}") from None


def _load_file(path):
    """The module of the Python file `path`: imported by its dotted name when it sits in
    a package (the folder above the outermost package goes on sys.path), else run as a
    module of its own with its folder on sys.path."""
    import importlib
    import importlib.util
    from pathlib import Path

    path = path.resolve()
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if len(parts) > 1:
        dotted = ".".join(parts)
        module = importlib.import_module(dotted)
        loaded = getattr(module, "__file__", None)
        if loaded is None or Path(loaded).resolve() != path:
            raise ImportError(
                f"{path} is the module {dotted}, but {dotted} is already loaded from "
                f"{loaded}; run from another folder or name the module (MODULE:KERNEL)"
            )
        return module
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _reason(error: BaseException) -> str:
    """An exception as one line: its type and message (a syntax error: its place)."""
    if isinstance(error, SyntaxError):
        return f"{error.filename}:{error.lineno}: SyntaxError: {error.msg}"
    return f"{type(error).__name__}: {error}"


#: What a bool constexpr takes on the command line, and what each spelling means.
BOOL_SPELLINGS = {"True": True, "true": True, "1": True, "False": False, "false": False, "0": False}


def parse_define(text: str) -> tuple[str, object]:
    """`NAME=VALUE`: an int, a float, a bool (True/False/true/false), or a dtype name
    (u4, f16, ...); the text itself otherwise."""
    from tilelang import dtypes

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"-D expects NAME=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return name, convert(value)
        except ValueError:
            pass
    if value in BOOL_SPELLINGS:
        return name, BOOL_SPELLINGS[value]
    try:
        return name, dtypes.dtype(value)
    except ValueError:
        return name, value


def kernel_defines(kernel, defines: list[str]) -> dict[str, object]:
    """The -D options as `kernel`'s constexprs: `parse_define`'s values, except that a
    constexpr whose default is a bool takes True, False, true, false, 1 or 0 (and
    nothing else: the error lists them)."""
    # The declared constexprs, as the autotuner reads them (the CLI may not import lang).
    bools = {name for name, p in kernel._constexprs.items() if isinstance(p.default, bool)}
    values = {}
    for text in defines:
        name, value = parse_define(text)
        if name in bools:
            given = text.partition("=")[2]
            if given not in BOOL_SPELLINGS:
                raise ValueError(
                    f"-D {name}: {kernel.__name__}()'s constexpr {name} is a bool: give "
                    f"True, False, true, false, 1 or 0, got {given!r}"
                )
            value = BOOL_SPELLINGS[given]
        values[name] = value
    return values


SASS_GROUPS = (
    ("HMMA (tensor-core mma)", ("HMMA", "IMMA")),
    ("LDSM (ldmatrix)", ("LDSM",)),
    ("LDGSTS (cp.async)", ("LDGSTS",)),
    ("LDG (global loads)", ("LDG",)),
    ("STG (global stores)", ("STG",)),
    ("LOP3", ("LOP3",)),
    ("PRMT", ("PRMT",)),
    ("I2F (int to float)", ("I2F",)),
    ("SHFL", ("SHFL",)),
    ("LDL/STL (local memory, spills)", ("LDL", "STL")),
)


def sass_summary(cubin: bytes) -> str:
    """Counts of the instructions that tell how a kernel was compiled, by width: in the
    main loop (the largest loop of the SASS) and in the whole kernel."""
    from tilelang.runtime.sass import disassemble, main_loop, opcodes

    sass = disassemble(cubin)
    whole = opcodes(sass)
    loop_text = main_loop(sass)
    loop = opcodes(loop_text) if loop_text is not None else None
    lines = [f"  {'':32} {'loop':>5} {'all':>5}  (loop: the largest loop in the SASS)"]
    for title, prefixes in SASS_GROUPS:
        found = {op: n for op, n in whole.items() if op.split(".")[0] in prefixes}
        in_loop = sum(n for op, n in (loop or {}).items() if op.split(".")[0] in prefixes)
        detail = ", ".join(f"{op} x{n}" for op, n in sorted(found.items()))
        shown = str(in_loop) if loop is not None else "-"
        lines.append(f"  {title:32} {shown:>5} {sum(found.values()):5}  {detail}")
    return "\n".join(lines)


def parse_size(text: str) -> tuple[str, int]:
    """`NAME=VALUE` of `--size`: a size or scalar parameter and its integer value."""
    name, sep, value = text.partition("=")
    if sep and name and value.strip().lstrip("-").isdigit():
        return name, int(value)
    raise ValueError(f"--size expects NAME=INT, got {text!r}")


def launch_facts(kernel, constexprs: dict, launch: dict[str, int]) -> dict[str, int]:
    """What a launch with these sizes would specialize the kernel on
    (`tilelang.runtime.launch_facts.size_facts`, for the kernel's sizes given; the others: none)."""
    from tilelang.runtime.launch_facts import size_facts

    names = {var.name for var in kernel.specialize(**constexprs).sizes}
    return size_facts({name: size for name, size in launch.items() if name in names})


def _cmd_perf(kernel, constexprs: dict, args: argparse.Namespace) -> int:
    launch = dict(parse_size(s) for s in args.size)
    assume = launch_facts(kernel, constexprs, launch)
    compiled = kernel.compile(assume=assume, target=args.arch, **constexprs)
    report = compiled.perf(
        per=args.per, latency_ns=args.latency_ns, iterations=args.iterations, **launch
    )
    print(report)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tilelang.ir.printer import print_function
    from tilelang.runtime.sass import SassUnavailableError

    kernel = load_kernel(args.kernel)
    constexprs = kernel_defines(kernel, args.define)
    if args.perf:
        return _cmd_perf(kernel, constexprs, args)
    if args.size or args.per or args.latency_ns is not None or args.iterations is not None:
        raise ValueError("--size, --per, --latency-ns and --iterations go with --perf")
    compiled = kernel.compile(target=args.arch, **constexprs)
    stages = compiled.stages
    names = [args.pass_name] if args.pass_name else [*stages, "lower"]
    for name in names:
        if name == "lower":
            text = compiled.ir("lower")
        elif name in stages:
            text = print_function(stages[name])
        else:
            raise ValueError(f"no pass {name!r}; the passes are {', '.join([*stages, 'lower'])}")
        print(f"==== IR after {name} ====\n{text}")
    if args.pass_name:
        return 0
    print(f"==== CUDA source ({compiled.target}) ====\n{compiled.source}")
    print(f"==== PTX ====\n{compiled.ptx}")
    r = compiled.resources
    print(
        f"==== resources ({r.source}) ====\n  registers {r.registers}, spill stores "
        f"{r.spill_store_bytes} B, spill loads {r.spill_load_bytes} B, local {r.local_bytes} B, "
        f"dynamic shared {compiled.thread.shared_bytes} B, threads {compiled.thread.threads}"
    )
    print(f"  lowering: {', '.join(f'{k}={v}' for k, v in sorted(compiled.stats.items()))}")
    try:
        print(f"==== SASS summary ====\n{sass_summary(compiled.cubin)}")
    except SassUnavailableError as error:
        print(f"==== SASS summary: skipped ({error}) ====")
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from tilelang.aot.command import compile_kernels

    kernels = [load_kernel(spec) for spec in args.kernels]
    constexprs = [kernel_defines(kernel, args.define) for kernel in kernels]
    return compile_kernels(args, kernels, constexprs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tilelang", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dtypes", help="print the table of named data types").set_defaults(
        run=_cmd_dtypes
    )
    layout = sub.add_parser("layout", help="describe a register layout and draw it")
    layout.add_argument("expr", help='layout expression, e.g. "local(2,1).spatial(8,4).local(1,2)"')
    layout.add_argument("--out", help="picture to write: FILE.svg, or FILE.png (needs cairosvg)")
    layout.set_defaults(run=_cmd_layout)
    inspect = sub.add_parser(
        "inspect", help="show a kernel's IR after every pass, CUDA, PTX, resources and SASS"
    )
    inspect.add_argument(
        "kernel", help="FILE:KERNEL or MODULE:KERNEL, e.g. examples/matmul.py:matmul"
    )
    inspect.add_argument("--arch", default="sm_90", help="GPU architecture (default sm_90)")
    inspect.add_argument(
        "-D",
        dest="define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a constexpr value, e.g. -D WT=u4 -D BK=64",
    )
    inspect.add_argument("--pass", dest="pass_name", help="print only the IR after this pass")
    inspect.add_argument(
        "--perf",
        action="store_true",
        help="print only the static performance report (a prediction, no GPU needed) for "
        "the launch that --size describes",
    )
    inspect.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="with --perf: a size or scalar of the launch, e.g. --size M=1 --size K=8192",
    )
    inspect.add_argument(
        "--per", metavar="TENSOR", help="with --perf: count instructions per element of TENSOR"
    )
    inspect.add_argument(
        "--latency-ns",
        type=float,
        metavar="NS",
        help="with --perf: the DRAM latency to assume instead of the card's",
    )
    inspect.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="with --perf: the main loop's trip count per block, for a loop whose bounds "
        "the kernel reads from a tensor at run time",
    )
    inspect.set_defaults(run=_cmd_inspect)
    cache = sub.add_parser("cache", help="list or clear compiled kernels (TILELANG_CACHE_DIR)")
    cache.add_argument("action", choices=("ls", "clear"))
    cache.set_defaults(run=_cmd_cache)
    # Registering `compile` loads no compiler (tilelang.aot loads it when it runs).
    from tilelang.aot.command import add_parser as add_compile_parser

    add_compile_parser(sub, _cmd_compile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tilelang.kernel import TileLangError  # what compiling a kernel raises

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, TileLangError) as error:
        # A kernel's error already says FILE:LINE:COL and shows the line with a caret;
        # a traceback into the compiler would bury it.
        print(f"tilelang {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

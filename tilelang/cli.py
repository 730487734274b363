"""The `tilelang` command: data types, layout pictures, and the kernel cache."""

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
    from tilelang.ir.layout import parse_layout
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
    from tilelang.runtime.cache import DiskCache

    cache = DiskCache()
    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {cache.root}")
        return 0
    entries = cache.entries()
    for entry in entries:
        print(f"{entry.key[:16]}  {entry.size:>10,} bytes  {', '.join(entry.names)}")
    total = sum(e.size for e in entries)
    print(f"{len(entries)} entries, {total:,} bytes in {cache.root}")
    return 0


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
    cache = sub.add_parser("cache", help="list or clear compiled kernels (TILELANG_CACHE_DIR)")
    cache.add_argument("action", choices=("ls", "clear"))
    cache.set_defaults(run=_cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"tilelang {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

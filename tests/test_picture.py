"""Pictures of register and shared layouts: valid SVG whose cells say the right things."""

from __future__ import annotations

import ast
import inspect
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tilelang.ir import layout as layout_module
from tilelang.ir import shared_layout as shared_layout_module
from tilelang.ir.picture import (
    MIN_LABEL_FONT_PX,
    layout_svg,
    save_layout_picture,
    shared_layout_svg,
    thread_colour,
)
from tilelang.ir.shared_layout import Swizzle, row_major

SVG = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _layout_module():
    return layout_module


def mma_c_fragment():
    """The C/D fragment of mma.m16n8k16 (16x8), 32 threads x 4 locals."""
    lay = _layout_module()
    return lay.local(2, 1).spatial(8, 4).local(1, 2)


class TableLayout:
    """A layout given by its table: the picture module needs only this protocol."""

    def __init__(self, shape: tuple[int, ...], table: np.ndarray, text: str = "table") -> None:
        self.shape, self._table, self._text = shape, table, text
        self.rank = len(shape)
        self.num_threads, self.num_locals = table.shape[:2]

    def table(self) -> np.ndarray:
        return self._table

    def __str__(self) -> str:
        return self._text


def dense(shape: tuple[int, ...], threads: int, replicas: int = 1) -> TableLayout:
    """Thread t holds the t-th run of consecutive elements; copies for replication."""
    n = int(np.prod(shape))
    flat = np.arange(n).reshape(threads, n // threads)
    table = np.stack(np.unravel_index(flat, shape), axis=-1)
    return TableLayout(shape, np.concatenate([table] * replicas), f"dense{shape}x{replicas}")


def cells(svg: str) -> dict[tuple[int, int], ET.Element]:
    root = ET.fromstring(svg.encode())
    assert root.tag == f"{SVG}svg"
    found = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "cell":
            found[int(g.get("data-row")), int(g.get("data-col"))] = g
    return found


def label(cell: ET.Element) -> str | None:
    for t in cell.iter(f"{SVG}text"):
        if t.get("class") == "label":
            return "".join(t.itertext())
    return None


def fill(cell: ET.Element) -> str:
    return cell.find(f"{SVG}rect").get("fill")


def all_text(svg: str) -> str:
    return " ".join(ET.fromstring(svg.encode()).itertext())


# --------------------------------------------------------------------------- register layouts


def test_mma_c_fragment_labels_match_ptx_formula() -> None:
    layout = mma_c_fragment()
    assert tuple(layout.shape) == (16, 8)
    svg = layout_svg(layout)
    grid = cells(svg)
    assert len(grid) == 16 * 8
    for row in range(16):
        for col in range(8):
            lane = 4 * (row % 8) + col // 2
            i = 2 * (row // 8) + col % 2
            assert label(grid[row, col]) == f"{lane}:{i}"
            assert grid[row, col].get("data-thread") == str(lane)
    assert str(layout) in all_text(svg)


def test_colours_are_per_thread() -> None:
    grid = cells(layout_svg(mma_c_fragment()))
    by_thread: dict[str, set[str]] = {}
    for cell in grid.values():
        by_thread.setdefault(cell.get("data-thread"), set()).add(fill(cell))
    assert all(len(fills) == 1 for fills in by_thread.values())  # one colour per thread
    assert len({next(iter(f)) for f in by_thread.values()}) == 32  # 32 distinct colours
    assert thread_colour(3) == thread_colour(35)  # lanes repeat across warps


def test_rank1_and_rank3() -> None:
    svg1 = layout_svg(dense((12,), 4))
    grid1 = cells(svg1)
    assert len(grid1) == 12 and {r for r, _ in grid1} == {0}
    svg3 = layout_svg(dense((2, 3, 4), 6))
    grid3 = cells(svg3)
    assert len(grid3) == 24 and max(r for r, _ in grid3) == 5
    assert "flattened into rows" in all_text(svg3)
    assert label(grid3[4, 1]) == "4:1"  # index (1, 1, 1) = flat 17 = thread 4, local 1


def test_replication_shows_first_owner_and_count() -> None:
    svg = layout_svg(dense((4, 8), 8, replicas=4))
    grid = cells(svg)
    assert label(grid[0, 0]) == "0:0+3"
    assert label(grid[3, 7]) == "7:3+3"
    assert "thread 8 local 0" in grid[0, 0].find(f"{SVG}title").text
    assert "+k" in all_text(svg)


def test_64x64_stays_readable_or_says_labels_were_dropped() -> None:
    svg = layout_svg(dense((64, 64), 128))
    grid = cells(svg)
    assert len(grid) == 64 * 64
    fonts = {
        float(t.get("font-size"))
        for t in ET.fromstring(svg.encode()).iter(f"{SVG}text")
        if t.get("class") == "label"
    }
    assert fonts and min(fonts) >= MIN_LABEL_FONT_PX
    assert label(grid[63, 63]) == "127:31"
    assert "warps" in all_text(svg)  # 128 threads: warp boundaries are drawn and explained

    big = layout_svg(dense((128, 128), 32))
    assert len(cells(big)) == 128 * 128
    assert "labels omitted" in all_text(big)
    assert all(label(c) is None for c in cells(big).values())


def test_16x16_labels_are_large() -> None:
    svg = layout_svg(dense((16, 16), 32), title="sixteen")
    fonts = [
        float(t.get("font-size"))
        for t in ET.fromstring(svg.encode()).iter(f"{SVG}text")
        if t.get("class") == "label"
    ]
    assert len(fonts) == 256 and min(fonts) >= 12
    assert "sixteen" in all_text(svg)


# --------------------------------------------------------------------------- shared layouts


def test_shared_layout_picture_shows_offsets_and_banks() -> None:
    layout = row_major(8, 64).swizzled(Swizzle.for_bytes(128, 16))
    svg = shared_layout_svg(layout, 16)
    grid = cells(svg)
    assert len(grid) == 8 * 64
    for (r, c), cell in grid.items():
        offset = layout.offset((r, c))
        assert label(cell) == str(offset)
        assert cell.get("data-bank") == str((offset * 2 // 4) % 32)
    # Same bank -> same colour.
    assert fill(grid[0, 0]) == fill(grid[1, 8])  # both land in bank 0 after the swizzle
    assert str(layout) in all_text(svg)


# --------------------------------------------------------------------------- files


def test_save_svg_and_errors(tmp_path: Path) -> None:
    layout = dense((4, 8), 8)
    out = save_layout_picture(layout, tmp_path / "l.svg")
    assert len(cells(out.read_text())) == 32
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        save_layout_picture(layout, tmp_path / "l.jpg")
    with pytest.raises(ValueError, match="dtype_bits"):
        save_layout_picture(row_major(4, 8), tmp_path / "s.svg")
    shared = save_layout_picture(row_major(4, 8), tmp_path / "s.svg", dtype_bits=8)
    assert len(cells(shared.read_text())) == 32


def test_save_png(tmp_path: Path) -> None:
    out = save_layout_picture(dense((16, 8), 32), tmp_path / "l.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_png_without_cairosvg_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cairosvg", None)  # makes `import cairosvg` fail
    with pytest.raises(RuntimeError, match=r"pip install 'tilelang\[png\]'"):
        save_layout_picture(dense((4, 8), 8), tmp_path / "l.png")


# --------------------------------------------------------------------------- dependencies


def imported_modules(module: object) -> set[str]:
    """Every module an import statement of `module` names, at top level or in a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", [layout_module, shared_layout_module], ids=lambda m: m.__name__)
def test_layouts_never_import_the_picture_module(module: object) -> None:
    """picture draws layouts, so it imports them; an import the other way, even one deferred
    into a function, would be a cycle."""
    assert "tilelang.ir.picture" not in imported_modules(module)

"""Pictures of layouts: SVG (and PNG through the optional cairosvg).

This module owns how layouts are drawn for people:

* ``layout_svg`` — a register layout as a grid with one cell per tile element, coloured by
  the thread that holds it (hues cycle every 32 threads; thick lines mark where the owning
  warp changes) and labelled ``t:l`` (thread:local);
* ``shared_layout_svg`` — a shared layout as the same grid, coloured by the memory bank of
  each element and labelled with its offset, which makes swizzles visible;
* ``save_layout_picture`` — either picture written to ``.svg`` or ``.png``.

Dependencies go one way: this module imports ``layout`` and ``shared_layout``, and neither
of them imports it (a picture is asked for with ``layout_svg(layout)``, not a method of the
layout). It reads register layouts only through their public protocol (``shape``,
``num_threads``, ``num_locals``, ``table()``, ``str``), so any object with that protocol
can be drawn.

Each cell is a ``<g class="cell" data-row=.. data-col=..>`` holding a ``<rect>``, an optional
``<text class="label">`` and a ``<title>`` tooltip that lists every owner, so tools and tests
can read pictures back.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import BANK_BYTES, NUM_BANKS, WARP_SIZE, SharedLayout

__all__ = [
    "bank_colour",
    "layout_svg",
    "save_layout_picture",
    "shared_layout_svg",
    "svg_to_png",
    "thread_colour",
]

# Sizes in SVG user units (pixels at 1:1).
GRID_TARGET_PX = 1280  # the grid aims at this width or height, whichever binds
CELL_MAX_PX = 56.0
CELL_MIN_PX = 6.0
MIN_LABEL_FONT_PX = 7.0  # below this a label is unreadable in a PNG at 1:1
CHAR_WIDTH_EM = 0.62  # advance of DejaVu Sans Mono, the font the labels use
MARGIN_PX = 16.0
TITLE_FONT_PX = 16.0
CAPTION_FONT_PX = 12.0
FONT_FAMILY = "DejaVu Sans Mono, Menlo, Consolas, monospace"
UNOWNED_FILL = "#d9d9d9"


# --------------------------------------------------------------------------- colours


def _palette_colour(i: int) -> str:
    """The i-th of 32 colours, i taken mod 32.

    Hues step by 5/32 of the circle (5 is coprime to 32, so the 32 hues are all distinct)
    to put neighbouring indices — which sit next to each other in most layouts — far apart
    on the colour wheel; lightness alternates every 4 indices so that the few indices with
    close hues still differ in brightness.
    """
    i %= 32
    hue = (i * 5 % 32) / 32
    lightness = 0.80 if (i // 4) % 2 == 0 else 0.66
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.75)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def thread_colour(thread: int) -> str:
    """Fill colour of a thread: by lane, so the same lane has the same colour in every warp."""
    return _palette_colour(thread % WARP_SIZE)


def bank_colour(bank: int) -> str:
    """Fill colour of one of the 32 shared-memory banks."""
    return _palette_colour(bank % NUM_BANKS)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Cell:
    row: int
    col: int
    fill: str
    label: str  # "" for none
    tooltip: str
    attrs: tuple[tuple[str, str], ...] = ()
    group: int = 0  # cells of different groups get a thick line between them


@dataclass(frozen=True)
class _Grid:
    rows: int
    cols: int
    row_names: tuple[str, ...]
    col_names: tuple[str, ...]
    cell: float
    label_font: float  # 0: labels dropped
    two_lines: bool


def _grid_rows_cols(shape: Sequence[int]) -> tuple[int, int, str]:
    """Rows and columns of the drawing, and a note when dimensions were flattened."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1, ""
    if len(shape) == 1:
        return 1, shape[0], ""
    if len(shape) == 2:
        return shape[0], shape[1], ""
    lead = "×".join(str(s) for s in shape[:-1])
    return math.prod(shape[:-1]), shape[-1], f"leading dims {lead} flattened into rows"


def _row_names(shape: Sequence[int]) -> tuple[str, ...]:
    if len(shape) <= 1:
        return ("0",)
    if len(shape) == 2:
        return tuple(str(r) for r in range(shape[0]))
    # Name flattened rows by their multi-index: "1,3" reads better than row 7.
    return tuple(",".join(map(str, ix)) for ix in np.ndindex(*shape[:-1]))


def _fit_label(cell: float, labels: Sequence[str]) -> tuple[float, bool]:
    """Font size for labels in square cells, and whether they break after the ':'."""
    if not labels:
        return 0.0, False
    longest = max(len(s) for s in labels)
    one_line = min(0.4 * cell, 0.9 * cell / (CHAR_WIDTH_EM * longest))
    if one_line >= MIN_LABEL_FONT_PX:
        return one_line, False
    halves = [_split_label(s) for s in labels]
    if all(h[1] for h in halves):
        longest = max(max(len(a), len(b)) for a, b in halves)
        two_line = min(0.38 * cell, 0.9 * cell / (CHAR_WIDTH_EM * longest))
        if two_line >= MIN_LABEL_FONT_PX:
            return two_line, True
    return 0.0, False


def _split_label(label: str) -> tuple[str, str]:
    """'12:3+1' -> ('12:', '3+1'): the thread on the first line, the local on the second."""
    head, sep, tail = label.partition(":")
    return (head + sep, tail) if sep else (label, "")


def _make_grid(shape: Sequence[int], labels: Sequence[str]) -> tuple[_Grid, str]:
    rows, cols, note = _grid_rows_cols(shape)
    cell = min(CELL_MAX_PX, max(CELL_MIN_PX, GRID_TARGET_PX / max(rows, cols)))
    cell = math.floor(cell * 2) / 2  # half-pixel steps keep lines crisp in PNGs
    font, two_lines = _fit_label(cell, [s for s in labels if s])
    col_names = tuple(str(c) for c in range(cols))
    return _Grid(rows, cols, _row_names(shape), col_names, cell, font, two_lines), note


def _index_step(cell: float, names: Sequence[str], font: float) -> int:
    """Label every step-th index so that index labels never overlap."""
    widest = max(len(n) for n in names) * CHAR_WIDTH_EM * font + 2
    step = 1
    while step * cell < widest:
        step *= 2
    return step


# --------------------------------------------------------------------------- rendering


def _text(x: float, y: float, s: str, size: float, *, anchor: str = "middle", **kw: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:.1f}" '
        f'text-anchor="{anchor}"{extra}>{escape(s)}</text>'
    )


def _render(
    grid: _Grid,
    cells: Sequence[_Cell],
    *,
    title: str,
    caption: Sequence[str],
    legend: Sequence[tuple[str, str]] = (),
    draw_groups: bool = False,
) -> str:
    """The common picture: title, index labels, cells, group boundaries, legend, caption."""
    c = grid.cell
    index_font = max(6.0, min(12.0, 0.45 * c))
    row_label_w = max(len(n) for n in grid.row_names) * CHAR_WIDTH_EM * index_font + 8
    x0 = MARGIN_PX + row_label_w
    y0 = MARGIN_PX + TITLE_FONT_PX * 1.6 + index_font * 1.4
    grid_w, grid_h = grid.cols * c, grid.rows * c

    legend_cell = 22.0
    legend_cols = min(len(legend), max(1, int(max(grid_w, 32 * legend_cell) // legend_cell)))
    legend_rows = -(-len(legend) // legend_cols) if legend else 0
    legend_h = legend_rows * (legend_cell + 4) + (8 if legend else 0)
    caption_y = y0 + grid_h + 12 + legend_h
    height = caption_y + len(caption) * CAPTION_FONT_PX * 1.5 + MARGIN_PX

    text_w = max(
        [len(title) * CHAR_WIDTH_EM * TITLE_FONT_PX]
        + [len(s) * CHAR_WIDTH_EM * CAPTION_FONT_PX for s in caption]
    )
    width = max(x0 + grid_w, MARGIN_PX + text_w, MARGIN_PX + legend_cols * legend_cell)
    width += MARGIN_PX

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT_FAMILY}">',
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="white"/>',
        _text(MARGIN_PX, MARGIN_PX + TITLE_FONT_PX, title, TITLE_FONT_PX, anchor="start").replace(
            "<text", '<text class="title" font-weight="bold"', 1
        ),
    ]

    # Index labels along the top and the left edge.
    out.append('<g class="col-index" fill="#444">')
    step = _index_step(c, grid.col_names, index_font)
    for j in range(0, grid.cols, step):
        out.append(_text(x0 + (j + 0.5) * c, y0 - 0.4 * index_font, grid.col_names[j], index_font))
    out.append("</g>")
    out.append('<g class="row-index" fill="#444">')
    step = max(1, int(-(-index_font * 1.1 // c)))
    for i in range(0, grid.rows, step):
        y = y0 + (i + 0.5) * c + 0.35 * index_font
        out.append(_text(x0 - 4, y, grid.row_names[i], index_font, anchor="end"))
    out.append("</g>")

    # Cells. A thin white stroke separates cells without hiding small ones.
    stroke = min(1.0, c / 12)
    out.append(f'<g class="cells" fill="#111" font-size="{grid.label_font:.1f}">')
    for cell in cells:
        x, y = x0 + cell.col * c, y0 + cell.row * c
        attrs = "".join(f" data-{k}={quoteattr(v)}" for k, v in cell.attrs)
        out.append(f'<g class="cell" data-row="{cell.row}" data-col="{cell.col}"{attrs}>')
        out.append(f"<title>{escape(cell.tooltip)}</title>")
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{c:.1f}" height="{c:.1f}" '
            f'fill="{cell.fill}" stroke="white" stroke-width="{stroke:.2f}"/>'
        )
        if cell.label and grid.label_font:
            out.append(_label(cell.label, x + c / 2, y + c / 2, grid))
        out.append("</g>")
    out.append("</g>")

    if draw_groups:
        out.append(_group_boundaries(grid, cells, x0, y0))
    out.append(
        f'<rect class="frame" x="{x0:.1f}" y="{y0:.1f}" width="{grid_w:.1f}" '
        f'height="{grid_h:.1f}" fill="none" stroke="#222" stroke-width="1.5"/>'
    )

    if legend:
        out.append('<g class="legend">')
        ly = y0 + grid_h + 12
        for k, (fill, name) in enumerate(legend):
            lx = MARGIN_PX + (k % legend_cols) * legend_cell
            yy = ly + (k // legend_cols) * (legend_cell + 4)
            out.append(
                f'<rect x="{lx:.1f}" y="{yy:.1f}" width="{legend_cell - 2:.1f}" '
                f'height="{legend_cell - 2:.1f}" fill="{fill}"/>'
            )
            out.append(_text(lx + (legend_cell - 2) / 2, yy + legend_cell / 2 + 2.5, name, 8.0))
        out.append("</g>")

    for k, line in enumerate(caption):
        y = caption_y + (k + 1) * CAPTION_FONT_PX * 1.5 - 0.5 * CAPTION_FONT_PX
        out.append(
            _text(MARGIN_PX, y, line, CAPTION_FONT_PX, anchor="start").replace(
                "<text", '<text class="caption" fill="#222"', 1
            )
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _label(label: str, cx: float, cy: float, grid: _Grid) -> str:
    f = grid.label_font
    if not grid.two_lines:
        return _text(cx, cy + 0.35 * f, label, f).replace("<text", '<text class="label"', 1)
    head, tail = _split_label(label)
    # Two tspans keep the text content equal to the one-line label ("12:" + "3").
    return (
        f'<text class="label" x="{cx:.1f}" y="{cy - 0.2 * f:.1f}" font-size="{f:.1f}" '
        f'text-anchor="middle"><tspan x="{cx:.1f}">{escape(head)}</tspan>'
        f'<tspan x="{cx:.1f}" dy="{1.05 * f:.1f}">{escape(tail)}</tspan></text>'
    )


def _group_boundaries(grid: _Grid, cells: Sequence[_Cell], x0: float, y0: float) -> str:
    """Thick lines between neighbouring cells of different groups (warps)."""
    group = np.full((grid.rows, grid.cols), -1, dtype=np.int64)
    for cell in cells:
        group[cell.row, cell.col] = cell.group
    c = grid.cell
    segments = []
    for i, j in np.argwhere(group[:, 1:] != group[:, :-1]):
        x = x0 + (j + 1) * c
        segments.append(f"M{x:.1f} {y0 + i * c:.1f}v{c:.1f}")
    for i, j in np.argwhere(group[1:, :] != group[:-1, :]):
        y = y0 + (i + 1) * c
        segments.append(f"M{x0 + j * c:.1f} {y:.1f}h{c:.1f}")
    if not segments:
        return '<g class="warp-boundaries"/>'
    width = max(1.5, min(3.0, c / 8))
    return (
        f'<g class="warp-boundaries"><path d="{" ".join(segments)}" fill="none" '
        f'stroke="#111" stroke-width="{width:.1f}" stroke-linecap="square"/></g>'
    )


# --------------------------------------------------------------------------- register layouts


def _owners(layout: Layout) -> list[list[tuple[int, int]]]:
    """For each tile element (row-major), its (thread, local) owners, sorted."""
    shape = tuple(layout.shape)
    table = np.asarray(layout.table(), dtype=np.int64)
    num_threads, num_locals = table.shape[:2]
    flat = (
        np.ravel_multi_index(tuple(np.moveaxis(table, -1, 0)), shape)
        if shape
        else np.zeros((num_threads, num_locals), dtype=np.int64)
    )
    owners: list[list[tuple[int, int]]] = [[] for _ in range(math.prod(shape))]
    # Iterating threads then locals leaves each list sorted by (thread, local).
    for t in range(num_threads):
        for loc in range(num_locals):
            owners[int(flat[t, loc])].append((t, loc))
    return owners


def _owner_label(owners: Sequence[tuple[int, int]]) -> str:
    if not owners:
        return ""
    t, loc = owners[0]
    extra = f"+{len(owners) - 1}" if len(owners) > 1 else ""
    return f"{t}:{loc}{extra}"


def layout_svg(layout: Layout, *, title: str | None = None) -> str:
    """A standalone SVG picture of a register layout.

    One cell per tile element (rank 1: one row; rank 2: rows × columns; higher ranks: the
    leading dimensions flattened into rows, said in the title), filled with its thread's
    colour and labelled ``thread:local``. An element held by several threads (replication)
    shows its first owner and ``+k`` for the k others; its tooltip lists them all.
    """
    shape = tuple(layout.shape)
    owners = _owners(layout)
    labels = [_owner_label(o) for o in owners]
    grid, note = _make_grid(shape, labels)
    cols = grid.cols
    cells = []
    for flat, (own, label) in enumerate(zip(owners, labels, strict=True)):
        r, col = divmod(flat, cols)
        index = np.unravel_index(flat, shape) if shape else ()
        where = "(" + ", ".join(str(int(i)) for i in index) + ")"
        if own:
            t, loc = own[0]
            who = ", ".join(f"thread {a} local {b}" for a, b in own)
            cells.append(
                _Cell(
                    r,
                    col,
                    thread_colour(t),
                    label,
                    f"{where}: {who}",
                    (("thread", str(t)), ("local", str(loc)), ("owners", str(len(own)))),
                    group=t // WARP_SIZE,
                )
            )
        else:
            cells.append(_Cell(r, col, UNOWNED_FILL, "", f"{where}: no owner", group=-1))

    num_threads, num_locals = layout.num_threads, layout.num_locals
    dims = "×".join(map(str, shape)) or "scalar"
    default = f"register layout {dims}: {num_threads} threads × {num_locals} locals"
    heading = title if title is not None else default
    if note:
        heading = f"{heading} ({note})"
    caption = [str(layout), "cell label thread:local; colour by lane"]
    if num_threads > WARP_SIZE:
        caption[1] += "; thick lines separate warps"
    if any(len(o) > 1 for o in owners):
        caption[1] += "; +k = k more threads hold the element"
    if not grid.label_font:
        caption.append("labels omitted: cells too small (hover a cell for its owners)")
    return _render(grid, cells, title=heading, caption=caption, draw_groups=num_threads > 1)


# --------------------------------------------------------------------------- shared layouts


def shared_layout_svg(
    shared_layout: SharedLayout, dtype_bits: int, *, title: str | None = None
) -> str:
    """A standalone SVG of a shared layout: each element coloured by its bank, labelled
    with its element offset. Sub-byte elements take the bank of the byte they start in."""
    if dtype_bits < 1:
        raise ValueError(f"dtype_bits must be positive, got {dtype_bits}")
    shape = shared_layout.shape
    offsets = shared_layout.table().ravel()
    banks = (offsets * dtype_bits // 8 // BANK_BYTES) % NUM_BANKS
    labels = [str(int(o)) for o in offsets]
    grid, note = _make_grid(shape, labels)
    cells = []
    for flat, (off, bank) in enumerate(zip(offsets, banks, strict=True)):
        r, col = divmod(flat, grid.cols)
        index = ", ".join(str(int(i)) for i in np.unravel_index(flat, shape))
        cells.append(
            _Cell(
                r,
                col,
                bank_colour(int(bank)),
                labels[flat],
                f"({index}): offset {off}, byte {off * dtype_bits // 8}, bank {bank}",
                (("offset", str(int(off))), ("bank", str(int(bank)))),
            )
        )
    dims = "×".join(map(str, shape))
    heading = title if title is not None else f"shared layout {dims}, {dtype_bits}-bit elements"
    if note:
        heading = f"{heading} ({note})"
    caption = [str(shared_layout), "cell label: element offset; colour: bank (32 banks × 4 B)"]
    if not grid.label_font:
        caption.append("labels omitted: cells too small (hover a cell for its offset)")
    legend = [(bank_colour(b), str(b)) for b in range(NUM_BANKS)]
    return _render(grid, cells, title=heading, caption=caption, legend=legend)


# --------------------------------------------------------------------------- files


def svg_to_png(svg: str) -> bytes:
    """Rasterize an SVG with cairosvg (the optional ``png`` extra)."""
    try:
        import cairosvg
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libcairo is not
        raise RuntimeError(
            "PNG output needs cairosvg (and the cairo library): "
            "pip install 'tilelang[png]'  (or: pip install cairosvg); "
            f"or save as .svg instead ({e})"
        ) from e
    return cairosvg.svg2png(bytestring=svg.encode("utf-8"))


def save_layout_picture(
    layout: Layout | SharedLayout,
    path: str | Path,
    *,
    title: str | None = None,
    dtype_bits: int | None = None,
) -> Path:
    """Write a picture of a register layout (or of a shared layout, given ``dtype_bits``)
    to ``path``; the suffix picks the format: ``.svg`` or ``.png``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise ValueError(f"cannot tell the picture format of {path}: use a .svg or .png suffix")
    if isinstance(layout, SharedLayout):
        if dtype_bits is None:
            raise ValueError("a shared layout picture needs dtype_bits (its banks depend on it)")
        svg = shared_layout_svg(layout, dtype_bits, title=title)
    else:
        svg = layout_svg(layout, title=title)
    if suffix == ".svg":
        path.write_text(svg, encoding="utf-8")
    else:
        path.write_bytes(svg_to_png(svg))
    return path

"""Hardware atoms against the PTX ISA's fragment formulas, lane by lane and element by element.

The formulas below are transcribed from the PTX ISA ("Matrix Fragments for mma.m16n8k16
with floating point type", "... for mma.m16n8k32", and ldmatrix), independently of the
layout expressions in tilelang.ir.atoms.
"""

from __future__ import annotations

import numpy as np
import pytest

from tilelang.ir.atoms import (
    LDMATRIX_ATOMS,
    MMA_ATOMS,
    MMA_M16N8K16_F16,
    MMA_M16N8K32_I8,
    WARP_SIZE,
    LdmatrixAtom,
    ldmatrix_layout,
    mma_atoms_for,
)
from tilelang.ir.layout import LayoutDivisionError, local, spatial


def group_id(lane: int) -> int:
    return lane >> 2


def thread_in_group(lane: int) -> int:
    return lane % 4


# --------------------------------------------------------------------------- PTX formulas


def m16n8k16_a(lane: int, i: int) -> tuple[int, int]:
    row = group_id(lane) if (i < 2 or 4 <= i < 6) else group_id(lane) + 8
    col = thread_in_group(lane) * 2 + (i & 0x1) + (8 if i >= 4 else 0)
    return row, col


def m16n8k16_b(lane: int, i: int) -> tuple[int, int]:
    row = thread_in_group(lane) * 2 + (i & 0x1) + (8 if i >= 2 else 0)
    return row, group_id(lane)


def m16n8_c(lane: int, i: int) -> tuple[int, int]:
    row = group_id(lane) if i < 2 else group_id(lane) + 8
    col = thread_in_group(lane) * 2 + (i & 0x1)
    return row, col


def m16n8k32_a(lane: int, i: int) -> tuple[int, int]:
    row = group_id(lane) if (i < 4 or 8 <= i < 12) else group_id(lane) + 8
    col = thread_in_group(lane) * 4 + (i & 0x3) + (16 if i >= 8 else 0)
    return row, col


def m16n8k32_b(lane: int, i: int) -> tuple[int, int]:
    row = thread_in_group(lane) * 4 + (i & 0x3) + (16 if i >= 4 else 0)
    return row, group_id(lane)


def ldmatrix_element(lane: int, i: int, trans: bool) -> tuple[int, int]:
    """Element i (0, 1) of the 32-bit register lane `lane` receives, in one 8×8 matrix."""
    if trans:
        return thread_in_group(lane) * 2 + i, group_id(lane)
    return group_id(lane), thread_in_group(lane) * 2 + i


def expected_table(formula, num_locals: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([[formula(lane, i) for i in range(num_locals)] for lane in range(WARP_SIZE)])


# --------------------------------------------------------------------------- mma


@pytest.mark.parametrize(
    ("layout", "formula", "num_locals", "shape"),
    [
        (MMA_M16N8K16_F16.a, m16n8k16_a, 8, (16, 16)),
        (MMA_M16N8K16_F16.b, m16n8k16_b, 4, (16, 8)),
        (MMA_M16N8K16_F16.c, m16n8_c, 4, (16, 8)),
        (MMA_M16N8K32_I8.a, m16n8k32_a, 16, (16, 32)),
        (MMA_M16N8K32_I8.b, m16n8k32_b, 8, (32, 8)),
        (MMA_M16N8K32_I8.c, m16n8_c, 4, (16, 8)),
    ],
    ids=["k16.a", "k16.b", "k16.c", "k32.a", "k32.b", "k32.c"],
)
def test_mma_fragments_match_ptx(layout, formula, num_locals: int, shape: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert layout.shape == shape
    assert layout.num_threads == WARP_SIZE and layout.num_locals == num_locals
    np.testing.assert_array_equal(layout.table(), expected_table(formula, num_locals))
    assert layout.is_bijective()


def test_mma_c_is_the_design_example() -> None:
    assert MMA_M16N8K16_F16.c == local(2, 1).spatial(8, 4).local(1, 2)
    assert str(MMA_M16N8K16_F16.c) == "local(2, 1).spatial(8, 4).local(1, 2)"


def test_mma_atom_metadata() -> None:
    assert MMA_ATOMS == {"m16n8k16.f16": MMA_M16N8K16_F16, "m16n8k32.i8": MMA_M16N8K32_I8}
    assert (MMA_M16N8K16_F16.m, MMA_M16N8K16_F16.n, MMA_M16N8K16_F16.k) == (16, 8, 16)
    assert (MMA_M16N8K32_I8.m, MMA_M16N8K32_I8.n, MMA_M16N8K32_I8.k) == (16, 8, 32)
    assert mma_atoms_for("bf16") == [MMA_M16N8K16_F16]
    assert mma_atoms_for("u8") == [MMA_M16N8K32_I8]
    assert mma_atoms_for("f32") == []
    assert MMA_M16N8K16_F16.acc_dtype == "f32" and MMA_M16N8K32_I8.acc_dtype == "i32"


def test_mma_atom_rejects_a_wrong_fragment() -> None:
    with pytest.raises(ValueError, match="not a one-warp"):
        type(MMA_M16N8K16_F16)(
            "bad",
            "mma",
            16,
            8,
            16,
            ("f16",),
            "f32",
            spatial(16, 2).local(1, 8),
            MMA_M16N8K16_F16.b,
            local(16, 8),
        )


def test_instruction_selection_by_division() -> None:
    # A warp's 32×16 f32 accumulator made of 2×2 mma tiles divides by the C atom.
    acc = local(2, 2) * MMA_M16N8K16_F16.c
    assert acc / MMA_M16N8K16_F16.c == local(2, 2)
    # A 16×16 A operand tile of a k32 int8 atom is not an f16 A fragment.
    with pytest.raises(LayoutDivisionError, match="dim 1"):
        MMA_M16N8K32_I8.a / MMA_M16N8K16_F16.a
    # A row-per-thread tile is no mma fragment at all.
    assert not spatial(16, 2).local(1, 4).divisible_by(MMA_M16N8K16_F16.c)


# --------------------------------------------------------------------------- ldmatrix


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_fragments_match_ptx(num: int, trans: bool) -> None:
    atom = LDMATRIX_ATOMS[f"ldmatrix.x{num}" + (".trans" if trans else "")]
    layout = atom.layout
    assert layout.shape == (8 * num, 8) and layout.num_locals == 2 * num
    table = layout.table()
    for lane in range(WARP_SIZE):
        for j in range(num):  # destination register j holds matrix j, stacked down the rows
            for i in range(2):
                row, col = ldmatrix_element(lane, i, trans)
                assert tuple(table[lane, 2 * j + i]) == (8 * j + row, col)


@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_grid_fills_column_by_column(trans: bool) -> None:
    layout = ldmatrix_layout(4, trans, grid=(2, 2))
    table = layout.table()
    for lane in range(WARP_SIZE):
        for j in range(4):
            for i in range(2):
                row, col = ldmatrix_element(lane, i, trans)
                assert tuple(table[lane, 2 * j + i]) == (8 * (j % 2) + row, 8 * (j // 2) + col)


def test_ldmatrix_feeds_mma() -> None:
    # x4 on a 2×2 grid is the A fragment, x2.trans (stacked in K) the B fragment.
    assert ldmatrix_layout(4, grid=(2, 2)) == MMA_M16N8K16_F16.a
    assert LDMATRIX_ATOMS["ldmatrix.x2.trans"].layout == MMA_M16N8K16_F16.b
    assert LDMATRIX_ATOMS["ldmatrix.x4"].with_grid(2, 2).layout == MMA_M16N8K16_F16.a
    # Any A fragment divides by one 8×8 matrix: four x1 loads also work.
    assert MMA_M16N8K16_F16.a / LDMATRIX_ATOMS["ldmatrix.x1"].layout == local(1, 1).column_local(
        2, 2
    )


def test_ldmatrix_row_addresses() -> None:
    # Lane ℓ addresses row ℓ % 8 of matrix ℓ // 8; only 8·num lanes supply addresses.
    x4 = LDMATRIX_ATOMS["ldmatrix.x4"]
    np.testing.assert_array_equal(
        x4.row_starts(), np.stack([np.arange(32), np.zeros(32, int)], axis=-1)
    )
    grid = x4.with_grid(2, 2).row_starts()
    for lane in range(32):
        j, r = divmod(lane, 8)
        assert tuple(grid[lane]) == (8 * (j % 2) + r, 8 * (j // 2))
    assert LDMATRIX_ATOMS["ldmatrix.x1"].row_starts().shape == (8, 2)


def test_ldmatrix_metadata_and_errors() -> None:
    assert (
        LDMATRIX_ATOMS["ldmatrix.x4.trans"].ptx == "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"
    )
    assert len(LDMATRIX_ATOMS) == 6
    with pytest.raises(ValueError, match="1, 2 or 4"):
        ldmatrix_layout(3)
    with pytest.raises(ValueError, match="grid"):
        LdmatrixAtom(4, False, (1, 2))

"""Hardware atoms: the warp-level instructions' register fragments as layout constants.

This module owns the layouts the PTX ISA fixes for one warp (32 lanes): the A, B and C/D
fragments of ``mma.sync`` (m16n8k16 for f16/bf16, m16n8k32 for 8-bit integers) and the
destination fragments of ``ldmatrix`` (x1/x2/x4, with and without ``.trans``), and for
one warpgroup (128 threads) the A and D fragments of ``wgmma`` m64nNk16. The
lowering selects an instruction for a tile exactly when the tile's layout divides by
the atom's layout (``tile_layout / atom.a``), see docs/design.md §4 and §6.

Notation of the PTX ISA (used in the comments): ``groupID = lane >> 2``,
``threadID_in_group = lane % 4``; ``i`` is the element index within a lane's fragment.
Every tile coordinate is (row, col) of the operand as PTX names it: A is M×K, B is K×N,
C/D is M×N. Element types are tilelang dtype names (``tilelang.dtypes``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np

from tilelang.ir.layout import Layout, column_local, column_spatial, local, spatial

__all__ = [
    "LDMATRIX_ATOMS",
    "LDMATRIX_CANDIDATES",
    "MMA_ATOMS",
    "MMA_M16N8K16_F16",
    "MMA_M16N8K32_I8",
    "WARPGROUP",
    "WARP_SIZE",
    "LdmatrixAtom",
    "MmaAtom",
    "WgmmaAtom",
    "ldmatrix_layout",
    "mma_atoms_for",
    "wgmma_atom",
]

WARP_SIZE = 32

# --------------------------------------------------------------------------- mma.sync


@dataclass(frozen=True)
class MmaAtom:
    """One ``mma.sync.aligned`` shape: D (m×n) = A (m×k) · B (k×n) + C, one warp.

    `operand_dtypes` are the element types A and B may have (both the same one);
    `acc_dtype` is the C/D type. `a`, `b`, `c` are the per-lane fragments.
    """

    name: str
    ptx: str
    m: int
    n: int
    k: int
    operand_dtypes: tuple[str, ...]
    acc_dtype: str
    a: Layout
    b: Layout
    c: Layout

    def __post_init__(self) -> None:
        # The constants below are written once; this guards against a typo in them.
        for what, layout, shape in (
            ("a", self.a, (self.m, self.k)),
            ("b", self.b, (self.k, self.n)),
            ("c", self.c, (self.m, self.n)),
        ):
            if layout.shape != shape or layout.num_threads != WARP_SIZE or layout.replication != 1:
                raise ValueError(
                    f"{self.name}: fragment {what} = {layout} is not a one-warp {shape} tile"
                )


# Both mma shapes share one pattern: lane = 4·groupID + threadID_in_group, where groupID
# picks a row of A and C and a column of B, and threadID_in_group picks a run of
# consecutive K (A, B) or N (C) elements that the lane holds as adjacent locals; further
# locals step over 8-row halves of M and 8- or 16-wide chunks of K.

# C/D (16×8, f32 or s32): c_i at row = groupID + 8·(i >= 2), col = 2·threadID_in_group + (i & 1).
_C_16X8 = local(2, 1).spatial(8, 4).local(1, 2)

MMA_M16N8K16_F16 = MmaAtom(
    name="m16n8k16.f16",
    ptx="mma.sync.aligned.m16n8k16.row.col",
    m=16,
    n=8,
    k=16,
    operand_dtypes=("f16", "bf16"),
    acc_dtype="f32",
    # a_i (i < 8): row = groupID + 8·((i >> 1) & 1), col = 2·threadID_in_group + (i & 1) + 8·(i >= 4).
    # The local index is (col half, row half, pair): a column-major 2×2 grid of 8×8 blocks.
    a=column_local(2, 2).spatial(8, 4).local(1, 2),
    # b_i (i < 4): row (k) = 2·threadID_in_group + (i & 1) + 8·(i >= 2), col (n) = groupID.
    # lane = 4·col + row/2 within an 8×8 block: column-major over (4 row pairs, 8 cols).
    b=local(2, 1).column_spatial(4, 8).local(2, 1),
    c=_C_16X8,
)

MMA_M16N8K32_I8 = MmaAtom(
    name="m16n8k32.i8",
    ptx="mma.sync.aligned.m16n8k32.row.col",
    m=16,
    n=8,
    k=32,
    operand_dtypes=("i8", "u8"),
    acc_dtype="i32",
    # a_i (i < 16): row = groupID + 8·((i >> 2) & 1), col = 4·threadID_in_group + (i & 3) + 16·(i >= 8).
    a=column_local(2, 2).spatial(8, 4).local(1, 4),
    # b_i (i < 8): row (k) = 4·threadID_in_group + (i & 3) + 16·(i >= 4), col (n) = groupID.
    b=local(2, 1).column_spatial(4, 8).local(4, 1),
    c=_C_16X8,
)

MMA_ATOMS: dict[str, MmaAtom] = {atom.name: atom for atom in (MMA_M16N8K16_F16, MMA_M16N8K32_I8)}


def mma_atoms_for(dtype: str) -> list[MmaAtom]:
    """The mma atoms whose A and B operands may have element type `dtype`."""
    return [atom for atom in MMA_ATOMS.values() if dtype in atom.operand_dtypes]


# --------------------------------------------------------------------------- wgmma

#: Threads of a warpgroup: the four consecutive warps that issue one `wgmma` together.
WARPGROUP = 4 * WARP_SIZE


@dataclass(frozen=True)
class WgmmaAtom:
    """``wgmma.mma_async`` m64nNk16 with A in registers (f16/bf16, f32 accumulator), one
    warpgroup: warp w of the group holds rows 16w..16w+15 of A and of D, each as the
    mma.sync m16n8k16 fragment (D: N/8 of them side by side, the chunk the outer local
    digit). B comes from shared memory through a descriptor and has no register
    fragment."""

    n: int
    a: Layout  # 64 × 16 over 128 threads
    c: Layout  # 64 × n over 128 threads

    @property
    def m(self) -> int:
        return 64

    @property
    def k(self) -> int:
        return 16


@functools.cache
def wgmma_atom(n: int) -> WgmmaAtom:
    """The m64nNk16 atom (N a multiple of 8 up to 256)."""
    if n % 8 or not 8 <= n <= 256:
        raise ValueError(f"wgmma's N is a multiple of 8 from 8 to 256, not {n}")
    rows = spatial(4, 1)
    return WgmmaAtom(n, rows * MMA_M16N8K16_F16.a, rows * local(1, n // 8) * MMA_M16N8K16_F16.c)


# --------------------------------------------------------------------------- ldmatrix

# One 8×8 matrix of 16-bit elements. Without .trans lane ℓ receives row ℓ >> 2,
# columns 2·(ℓ % 4) + {0, 1}; with .trans it receives column ℓ >> 2, rows 2·(ℓ % 4) + {0, 1}
# of the matrix as stored (row r of matrix j is the 16 bytes addressed by lane 8·j + r).
_LDMATRIX_8X8 = spatial(8, 4).local(1, 2)
_LDMATRIX_8X8_TRANS = column_spatial(4, 8).local(2, 1)


def ldmatrix_layout(num: int, trans: bool = False, grid: tuple[int, int] | None = None) -> Layout:
    """The register layout ``ldmatrix.sync.aligned.m8n8.x{num}[.trans].b16`` produces.

    The tile is a `grid` of 8×8 matrices, (num, 1) by default: stacked down the rows.
    Matrix j — whose row addresses come from lanes 8j .. 8j+7 and which lands in
    destination register j — sits at grid cell (j % grid_rows, j // grid_rows), i.e. the
    matrices fill the grid column by column. With grid (2, 2), x4 is the A fragment of
    ``mma.m16n8k16``; x2.trans with the default grid is its B fragment.
    """
    if num not in (1, 2, 4):
        raise ValueError(f"ldmatrix loads 1, 2 or 4 matrices, not {num}")
    rows, cols = grid if grid is not None else (num, 1)
    if rows * cols != num:
        raise ValueError(f"a {rows}x{cols} grid does not hold {num} matrices")
    return column_local(rows, cols) * (_LDMATRIX_8X8_TRANS if trans else _LDMATRIX_8X8)


@dataclass(frozen=True)
class LdmatrixAtom:
    """One ``ldmatrix`` variant: `num` 8×8 b16 matrices placed on a `grid` (see `ldmatrix_layout`)."""

    num: int
    trans: bool
    grid: tuple[int, int] = field(default=(0, 0))  # (0, 0): the default (num, 1)

    def __post_init__(self) -> None:
        if self.grid == (0, 0):
            object.__setattr__(self, "grid", (self.num, 1))
        ldmatrix_layout(self.num, self.trans, self.grid)  # validates num and grid

    @property
    def name(self) -> str:
        return f"ldmatrix.x{self.num}" + (".trans" if self.trans else "")

    @property
    def ptx(self) -> str:
        return f"ldmatrix.sync.aligned.m8n8.x{self.num}{'.trans' if self.trans else ''}.shared.b16"

    @property
    def layout(self) -> Layout:
        return ldmatrix_layout(self.num, self.trans, self.grid)

    def with_grid(self, rows: int, cols: int) -> LdmatrixAtom:
        """The same instruction with its matrices placed on a rows×cols grid."""
        return replace(self, grid=(rows, cols))

    def row_starts(self) -> np.ndarray:
        """int64 [8·num, 2]: the tile (row, col) where the 16-byte row lane ℓ addresses starts.

        Only lanes 0 .. 8·num-1 supply addresses: lane ℓ gives row ℓ % 8 of matrix ℓ // 8.
        """
        rows = self.grid[0]
        lane = np.arange(8 * self.num, dtype=np.int64)
        matrix, row = lane // 8, lane % 8
        return np.stack([8 * (matrix % rows) + row, 8 * (matrix // rows)], axis=-1)


LDMATRIX_ATOMS: dict[str, LdmatrixAtom] = {
    atom.name: atom for atom in (LdmatrixAtom(n, t) for t in (False, True) for n in (1, 2, 4))
}

#: The ldmatrix forms the lowering tries for a register tile, in order (the register
#: estimate predicts the same choice): the widest first, x2 side by side for the
#: transposed B fragment (Kᵀ read as K is stored).
LDMATRIX_CANDIDATES = (
    LdmatrixAtom(4, False, (2, 2)),
    LdmatrixAtom(4, True, (2, 2)),
    LdmatrixAtom(2, True),
    LdmatrixAtom(2, False),
    LdmatrixAtom(2, False, (1, 2)),
    LdmatrixAtom(2, True, (1, 2)),
    LdmatrixAtom(1, False),
    LdmatrixAtom(1, True),
)

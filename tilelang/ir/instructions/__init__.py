"""The block-IR instructions, one class each, grouped by what they do: `memory`
(global and shared tiles, asynchronous copies, barriers), `compute` (creation,
elementwise, casts, dot, reductions, scans), `shape` (views, relayouts, reshapes,
transposes, broadcasts) and `control` (the grid, loops, branches, yield, print).

Each class is the one definition of its instruction (`tilelang.ir.core`): fields,
`SYNTAX`, `check`, `LAYOUT`. `tilelang.ir.nodes` re-exports them all.
"""

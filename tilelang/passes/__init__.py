"""Block-IR and thread-IR passes: each module one pass with a contract docstring and
`run(fn, target) -> fn` (most passes ignore the target).

The order lives in one place, `tilelang.pipeline.PIPELINE`; the lowering between the
block IR and the thread IR is `tilelang.lowering`.
"""

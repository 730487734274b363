"""Block-IR passes: each module one pass with a contract docstring and `run(fn) -> fn`.

The order lives in one place, `tilelang.passes.pipeline.PIPELINE`.
"""

"""A gathered row ends where the tensor's row ends (docs/guide.md "Masks": elements
outside the tensor read `fill`), also when the gather's tile is wider than the row and the
gather is pipelined: a `stages=S` loop copies the rows with cp.async (`gather_async`), whose
runs must stop at the row's end however wide the tile's padded width would let them be.

Each row here borders NaN just past its end (the next row's first element, and past the
tensor's last row a spare row of the allocation), so a run that crossed the row's end
would put NaN where the padding must read 0. Every last dim from 17 to 48 under stages 1,
2 and 3: the CPU backend and the interpreter give numpy's rows bit for bit; the CUDA
source copies a row of 20 f16 in 8-byte cp.asyncs, each under its own bounds predicate,
and power-of-two rows keep their 16-byte copies. Paged prefill (`flash_attention` with
`block_table=`) at head dim 20, NaN in every unused cache slot, against a float64
reference, for an f16 and an f8e4m3 cache."""

import re
import warnings

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bitwise

import tilelang as tl
from tilelang.cli import launch_facts
from tilelang.kernels import flash_attention
from tilelang.passes.software_pipeline import PipelineWarning

ROWS, STEP, COUNT = 40, 16, 48  # tensor rows, rows gathered a step, rows gathered in all


@tl.kernel(warps=4)
def gathered_rows(
    src: tl.Tensor[tl.f16, "N", "D"],
    index: tl.Tensor[tl.i32, "K"],
    out: tl.Tensor[tl.f16, "K", "W"],
    R: tl.constexpr = 16,
    W: tl.constexpr = 32,
    S: tl.constexpr = 2,
):
    """out[k] = src[index[k]] padded with zeros to W columns (a row outside src: zeros),
    R rows a step of a `stages=S` loop."""
    for k0 in tl.range(0, K, R, stages=S):
        rows = tl.load(index, [k0], [R])
        tl.store(out, [k0, 0], tl.load(src, [rows[:, None], 0], [R, W]))


def width(d: int) -> int:
    """The tile's padded width: the power of two from 32 up holding a row of d."""
    return max(32, 1 << (d - 1).bit_length())


def bordered_rows(d: int, seed: int) -> np.ndarray:
    """[ROWS, d] f16 of nonzero values, every row's first element NaN (what lies just past
    the previous row's end), viewed from an allocation of one more row, all NaN (what lies
    past the tensor's end)."""
    rng = np.random.default_rng(seed)
    memory = np.full((ROWS + 1, d), np.nan, np.float16)
    values = rng.uniform(1, 2, (ROWS, d)) * rng.choice([-1, 1], (ROWS, d))
    memory[:ROWS] = values.astype(np.float16)
    memory[:ROWS, 0] = np.nan
    return memory[:ROWS]


def row_index(seed: int) -> np.ndarray:
    """COUNT rows: the tensor's last row (followed by the spare NaN row), rows outside the
    tensor (-1, ROWS) and the others in a shuffled order."""
    rng = np.random.default_rng(seed)
    index = np.concatenate([[ROWS - 1, -1, ROWS], rng.permutation(ROWS - 1)])
    return np.resize(index, COUNT).astype(np.int32)


def expected_rows(src: np.ndarray, index: np.ndarray, w: int) -> np.ndarray:
    """numpy, from the definition: row r of src for 0 <= r < ROWS, zeros past its end and
    for rows outside src."""
    want = np.zeros((len(index), w), np.float16)
    for k, r in enumerate(index):
        if 0 <= r < len(src):
            want[k, : src.shape[1]] = src[r]
    return want


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("d", range(17, 49))
def test_a_gathered_row_reads_zeros_past_its_end_on_both_paths(d, stages):
    src, index = bordered_rows(d, seed=d), row_index(seed=stages)
    w = width(d)
    out = np.zeros((COUNT, w), np.float16)
    copied = stages > 1 and d % 2 == 0  # rows of whole 4-byte words: copied by cp.async
    with warnings.catch_warnings():  # 2-byte runs stay in place, and say so
        warnings.simplefilter("error" if copied else "ignore", PipelineWarning)
        compiled = gathered_rows(src, index, out.copy(), R=STEP, W=w, S=stages)
        interpreted = gathered_rows.interpret(src, index, out.copy(), R=STEP, W=w, S=stages)
    want = expected_rows(src, index, w)
    assert_bitwise(compiled, want)
    assert_bitwise(interpreted, want)
    if copied:
        stats = built(d, w, stages, "cpu").stats
        assert stats.get("pipeline_async") == 1, stats


def built(d: int, w: int, stages: int, target: str):
    """The build a call with a [ROWS, d] tensor gets (its size facts)."""
    constexprs = dict(R=STEP, W=w, S=stages)
    facts = launch_facts(gathered_rows, constexprs, dict(N=ROWS, D=d, K=COUNT))
    return gathered_rows.compile(assume=facts, target=target, **constexprs)


#: A cp.async call of the CUDA source: its bytes and its predicate (src-size 0 where false).
CP_ASYNC = re.compile(r"tl_cp_async_(\d+)_zfill\([^;]*, (\w+)\);")


def test_the_cuda_source_tests_every_piece_of_a_row_of_20_against_the_row_end():
    """A row of 20 f16 (40 bytes, 8-byte aligned) in a tile of 32: 8-byte cp.asyncs, no
    two under one predicate (a predicate tested at a 16-byte run's start would let its
    second half read columns 20..23 from the next row)."""
    copies = CP_ASYNC.findall(built(20, 32, 2, "sm_80").source)
    assert copies and {size for size, _ in copies} == {"8"}, copies
    predicates = [p for _, p in copies]
    assert len(set(predicates)) == len(predicates), predicates


def test_rows_of_a_power_of_two_keep_their_16_byte_copies():
    """A row of 32 f16 fills the tile: whole 16-byte runs, one predicate each."""
    stats = built(32, 32, 2, "sm_80").stats
    assert stats.get("gather_cp_async_bytes_16", 0) > 0, stats
    assert not any(k.startswith("gather_cp_async_bytes_") and k[-2:] != "16" for k in stats)


# -- paged prefill, head dim 20 ------------------------------------------------------------

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 4, 2, 20, 8
QUERIES, KEYS = [3, 5, 1], [11, 20, 9]  # per sequence; keys include the new queries


def paged_case(seed: int = 0):
    """q, caches (NaN in every slot no sequence uses), table, cu_seqlens_q, key counts:
    sequence b's key t is slot t % BLOCK of page table[b, t // BLOCK]."""
    rng = np.random.default_rng(seed)
    need = [-(-n // BLOCK) for n in KEYS]
    blocks = sum(need) + 2
    shape = (blocks, BLOCK, KV_HEADS, HEAD_DIM)
    k_cache, v_cache = (np.full(shape, np.nan, np.float16) for _ in "kv")
    table = np.zeros((len(KEYS), max(need) + 1), np.int32)
    pool = list(rng.permutation(blocks))
    for b, n in enumerate(KEYS):
        table[b, : need[b]] = [pool.pop() for _ in range(need[b])]
        for t in range(n):
            slot = (table[b, t // BLOCK], t % BLOCK)
            k_cache[slot], v_cache[slot] = rng.standard_normal((2, KV_HEADS, HEAD_DIM))
    cu_q = np.concatenate([[0], np.cumsum(QUERIES)]).astype(np.int32)
    q = rng.standard_normal((int(cu_q[-1]), HEADS, HEAD_DIM)).astype(np.float16)
    return q, k_cache, v_cache, table, cu_q, np.array(KEYS, np.int32)


def attention_reference(q, k_cache, v_cache, table, cu_q, counts):
    """float64, non-causal: each query of sequence b attends to the sequence's keys,
    gathered page by page; query head h reads KV head h // (HEADS / KV_HEADS)."""
    q = q.astype(np.float64)
    out = np.zeros(q.shape)
    group = HEADS // KV_HEADS
    for b, sk in enumerate(counts):
        slots = [(table[b, t // BLOCK], t % BLOCK) for t in range(sk)]
        keys = np.array([k_cache[s] for s in slots], np.float64)
        values = np.array([v_cache[s] for s in slots], np.float64)
        for i in range(int(cu_q[b]), int(cu_q[b + 1])):
            for h in range(HEADS):
                s = keys[:, h // group] @ q[i, h] * HEAD_DIM**-0.5
                w = np.exp(s - s.max())
                out[i, h] = w @ values[:, h // group] / w.sum()
    return out


@pytest.mark.parametrize("cache", ["f16", "f8e4m3"])
def test_paged_prefill_at_head_dim_20_reads_no_nan_from_unused_slots(cache):
    q, k_cache, v_cache, table, cu_q, counts = paged_case()
    scales = {}
    if cache == "f8e4m3":  # codes of the same values (NaN stays NaN), unit scales
        k_cache, v_cache = (c.astype(ml_dtypes.float8_e4m3fn) for c in (k_cache, v_cache))
        scales = dict(k_scale=1.0, v_scale=1.0)
    got = flash_attention(
        q, k_cache, v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table, **scales
    )
    got = np.asarray(got, np.float64)
    assert not np.isnan(got).any(), f"{int(np.isnan(got).sum())} NaN outputs"
    want = attention_reference(q, k_cache, v_cache, table, cu_q, counts)
    np.testing.assert_allclose(got, want, atol=4e-3, rtol=0)  # P rounded to f16 before P·V

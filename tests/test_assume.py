"""What `assume=` states, and that what a user inspects is what a build runs: a dict of
value facts adds to the default size facts ("all") instead of taking them away; a dict
that names a size states sizes itself; `kernel.stages()`/`kernel.ir()` default to the
facts `compile()` defaults to; `compiled.sass` is the build's own disassembly."""

import numpy as np
import pytest

import tilelang as tl


@tl.kernel(warps=4)
def scale_rows(
    q: tl.Tensor[tl.u8, "K", "N"],
    s: tl.Tensor[tl.f16, "K", "N"],
    y: tl.Tensor[tl.f16, "K", "N"],
    BK: tl.constexpr = 32,
    BN: tl.constexpr = 64,
):
    bk, bn = tl.blocks(tl.cdiv(K, BK), tl.cdiv(N, BN))
    w = tl.load(q, [bk * BK, bn * BN], [BK, BN]).to(tl.f32)
    scale = tl.load(s, [bk * BK, bn * BN], [BK, BN]).to(tl.f32)
    tl.store(y, [bk * BK, bn * BN], (w * scale).to(tl.f16))


def facts_of(assume) -> dict:
    return dict(scale_rows.compile(assume=assume).stages["frontend"].assume)


def test_value_facts_alone_keep_every_size_a_multiple_of_128():
    assert facts_of({"s": 16}) == {"K": 128, "N": 128, "s": 16}
    assert facts_of({"s": "finite"}) == {"K": 128, "N": 128, "s": "finite"}


def test_a_dict_that_names_a_size_states_the_sizes_itself():
    assert facts_of({"N": 8, "s": 16}) == {"N": 8, "s": 16}
    assert facts_of(None) == {}
    assert facts_of("all") == {"K": 128, "N": 128}


def test_value_facts_keep_the_wide_accesses_of_the_default_build():
    plain = scale_rows.compile(target="cpu")
    with_bound = scale_rows.compile(target="cpu", assume={"s": 16})
    assert with_bound.stats.get("global_load_sub_byte", 0) == 0
    widths = {k: v for k, v in plain.stats.items() if k.startswith("global_load_bytes")}
    assert {
        k: v for k, v in with_bound.stats.items() if k.startswith("global_load_bytes")
    } == widths


@pytest.mark.parametrize("stage", ["frontend", "vectorize", "plan_registers"])
def test_kernel_ir_shows_what_the_default_build_runs(stage):
    assert scale_rows.ir(stage) == scale_rows.compile().ir(stage)
    assert scale_rows.ir(stage, assume=None) == scale_rows.compile(assume=None).ir(stage)


@pytest.mark.usefixtures("disassembler")
def test_compiled_sass_is_the_disassembly_of_its_cubin():
    compiled = scale_rows.compile(target="sm_90")
    assert "scale_rows" in compiled.sass
    assert "EXIT" in compiled.sass and "LDG" in compiled.sass


def test_sass_of_a_cpu_build_says_it_needs_a_gpu_target():
    with pytest.raises(ValueError, match="SASS exists for a GPU target"):
        _ = scale_rows.compile().sass


def test_the_calls_still_agree_with_numpy():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (128, 128)).astype(np.uint8)
    s = rng.uniform(0.5, 2, (128, 128)).astype(np.float16)
    y = scale_rows(q, s, np.empty((128, 128), np.float16), assume={"s": 16})
    np.testing.assert_array_equal(y, (q * s.astype(np.float32)).astype(np.float16))

"""Call plans (`tilelang.runtime.call_plans`): a library function called again on device
tensors like the last ones replays what its full call launched, and nothing else.

The laws, on device-tensor stand-ins over host memory (nothing runs on a GPU; the
launches are recorded):

* a replayed call launches what the full call launches on the same arguments — the same
  builds, pointers, scalars, grids and streams — and returns the same tensors, for
  every library function (allocations come from an arena reset before each call, so a
  call's allocations have the same addresses whichever way it runs);
* a replay does no Python of the function's own;
* what a replay cannot vouch for runs in full and raises what the full call raises:
  misaligned or overlapping tensors, another aliasing of the arguments, host arrays;
* a function whose launches use memory of unknown origin is never planned.
"""

import numpy as np
import pytest

import tilelang.kernels as K
from tilelang import PackedArray, quant
from tilelang.kernels import common, norm
from tilelang.runtime import call_plans, counters, gpu, value_facts

ARENA_BYTES = 1 << 22


class Arena:
    """Device memory stand-in: allocations are bump-allocated from one host buffer,
    256-byte aligned; `reset` starts again from the mark `keep` set, past what the
    library keeps between calls (counters, placeholders, a weight's tensors)."""

    def __init__(self) -> None:
        self.memory = np.zeros(ARENA_BYTES + 256, np.uint8)
        self.base = -self.memory.ctypes.data % 256
        self.offset = self.mark = 0

    def reset(self) -> None:
        self.offset = self.mark

    def keep(self) -> None:
        self.mark = self.offset

    def take(self, nbytes: int) -> np.ndarray:
        start = self.base + self.offset
        self.offset += -(-max(nbytes, 1) // 256) * 256
        assert self.offset <= ARENA_BYTES, "arena exhausted"
        return self.memory[start : start + nbytes]


class Tensor:
    """A device tensor stand-in over host memory (`__cuda_array_interface__`)."""

    def __init__(self, host: np.ndarray, memory: np.ndarray | None = None) -> None:
        host = np.asarray(host)
        if memory is None:
            memory = np.empty(host.nbytes + 16, np.uint8)
            memory = memory[-memory.ctypes.data % 16 :][: host.nbytes]
        self.data = memory.view(host.dtype).reshape(host.shape)
        self.data[...] = host
        self.shape, self.dtype = tuple(host.shape), None
        self.bytes_shape = self.shape

    @property
    def __cuda_array_interface__(self) -> dict:
        return {
            "data": (self.data.ctypes.data, False),
            "shape": self.bytes_shape,
            "typestr": self.data.dtype.str,
            "strides": None,
            "version": 3,
        }


@pytest.fixture
def device(monkeypatch):
    """The GPU stubbed: launches recorded, allocations from an arena; autotuning off."""
    arena = Arena()
    launches = []

    class Buffer(Tensor):  # tilelang.DeviceBuffer: made from a host array, or empty
        def __init__(self, host):
            packed = host if isinstance(host, PackedArray) else None
            host = np.asarray(packed.data if packed else host)
            super().__init__(host, arena.take(host.nbytes))
            if packed is not None:  # its bytes, with its dtype and shape beside them
                self.dtype, self.shape = packed.dtype, packed.shape
                self.bytes_shape = (host.nbytes,)

        @classmethod
        def empty(cls, shape, dtype):
            return cls(np.zeros(shape, dtype))

    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")
    monkeypatch.setattr(gpu, "DeviceBuffer", Buffer)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_90a")
    monkeypatch.setattr(gpu, "current_stream", lambda values: 7)
    monkeypatch.setattr(counters, "_KEPT", {})
    monkeypatch.setattr(common, "_UNREAD", {})
    monkeypatch.setattr(
        gpu,
        "launch",
        lambda build, pointers, scalars, grid, stream: launches.append(
            (build, dict(pointers), dict(scalars), tuple(grid), stream)
        ),
    )
    monkeypatch.setattr(call_plans, "ENABLED", True)
    arena.launches = launches
    return arena


rng = np.random.default_rng(0)


def values(*shape, dtype=np.float16):
    return rng.standard_normal(shape).astype(dtype)


def f16(*shape):
    return Tensor(values(*shape))


def f32(*shape):
    return Tensor(rng.standard_normal(shape).astype(np.float32))


def i32(values):
    return Tensor(np.asarray(values, np.int32))


def addresses(result):
    if result is None:
        return None
    if isinstance(result, tuple):
        return tuple(addresses(r) for r in result)
    return result.__cuda_array_interface__["data"][0]


# Each case: the function and a maker of fresh arguments (new tensors, new addresses).
CASES = {
    "rms_norm": (K.rms_norm, lambda: ((f16(3, 256), f16(256)), {"eps": 1e-5})),
    "silu_and_mul": (K.silu_and_mul, lambda: ((f16(3, 128),), {})),
    "flash_attention": (
        K.flash_attention,
        lambda: ((f16(1, 40, 2, 64), f16(1, 40, 1, 64), f16(1, 40, 1, 64)), {"causal": True}),
    ),
    "flash_attention, a window (tuple)": (
        K.flash_attention,
        lambda: (
            (f16(1, 40, 2, 64), f16(1, 40, 2, 64), f16(1, 40, 2, 64)),
            {"window_size": (16, 0)},
        ),
    ),
    "flash_attention, a window (list), alibi": (
        K.flash_attention,
        lambda: (
            (f16(1, 40, 2, 64), f16(1, 40, 2, 64), f16(1, 40, 2, 64)),
            {"window_size": [8, 4], "alibi_slopes": f32(2)},
        ),
    ),
    "flash_attention varlen, lse": (
        K.flash_attention,
        lambda: (
            (f16(40, 2, 64), f16(40, 2, 64), f16(40, 2, 64)),
            dict(
                cu_seqlens_q=i32([0, 7, 40]),
                cu_seqlens_k=i32([0, 7, 40]),
                max_seqlen_q=33,
                return_lse=True,
            ),
        ),
    ),
    "paged_decode_attention": (
        K.paged_decode_attention,
        lambda: (
            (
                f16(2, 4, 64),
                f16(6, 16, 2, 64),
                f16(6, 16, 2, 64),
                i32([[0, 2, 4], [1, 3, 5]]),
                i32([40, 17]),
            ),
            {},
        ),
    ),
    "paged_decode_attention u8": (
        K.paged_decode_attention,
        lambda: (
            (
                f16(2, 4, 64),
                Tensor(rng.integers(0, 255, (6, 16, 2, 64), np.uint8)),
                Tensor(rng.integers(0, 255, (6, 16, 2, 64), np.uint8)),
                i32([[0, 2, 4], [1, 3, 5]]),
                i32([40, 17]),
                None,
                f32(6, 16, 2),
                f32(6, 16, 2),
            ),
            {},
        ),
    ),
    "selective_scan (walk, segments)": (
        K.selective_scan,
        lambda: (
            (f16(1, 64, 40), f16(1, 64, 40), f32(64, 16), f16(1, 16, 40), f16(1, 16, 40)),
            dict(D=f32(64), z=f16(1, 64, 40), delta_softplus=True, method="walk"),
        ),
    ),
    "selective_scan (chunked, last state)": (
        K.selective_scan,
        lambda: (
            (f16(2, 8, 40), f16(2, 8, 40), f32(8, 16), f16(2, 16, 40), f16(2, 16, 40)),
            dict(return_last_state=True, method="chunked"),
        ),
    ),
    "selective_state_update": (
        K.selective_state_update,
        lambda: (
            (f32(2, 64, 16), f16(2, 64), f16(2, 64), f32(64, 16), f16(2, 16), f16(2, 16)),
            dict(D=f32(64), dt_softplus=True),
        ),
    ),
    "causal_conv1d": (
        K.causal_conv1d,
        lambda: ((f16(2, 64, 40), f32(64, 4)), dict(activation="silu", return_final_states=True)),
    ),
    "causal_conv1d, one placeholder for initial and final states": (
        K.causal_conv1d,
        lambda: ((f16(2, 64, 40), f32(64, 4), f32(64)), {}),
    ),
    "causal_conv1d_update": (
        K.causal_conv1d_update,
        lambda: ((f16(2, 64), f16(2, 64, 3), f32(64, 4), f32(64)), dict(activation="silu")),
    ),
    "ssd_chunk_scan": (
        K.ssd_chunk_scan,
        lambda: (
            (f16(1, 40, 2, 64), f16(1, 40, 2), f32(2), f16(1, 40, 1, 16), f16(1, 40, 1, 16)),
            dict(chunk_size=32),
        ),
    ),
}


def launched(device, fn, args, kwargs):
    """(the launches, the addresses of what `fn` returned) of one call, its
    allocations from the arena's start."""
    device.launches.clear()
    device.reset()
    result = fn(*args, **kwargs)
    return list(device.launches), addresses(result)


@pytest.mark.parametrize("case", CASES)
def test_a_replayed_call_launches_what_the_full_call_launches(device, monkeypatch, case):
    fn, arguments = CASES[case]
    launched(device, fn, *arguments())  # compiles; makes what the library keeps
    device.keep()
    launched(device, fn, *arguments())  # recorded
    args, kwargs = arguments()
    assert fn.plans.plan(args, kwargs) is not None, "the second call left no plan"
    monkeypatch.setattr(call_plans, "ENABLED", False)
    full = launched(device, fn, args, kwargs)
    monkeypatch.setattr(call_plans, "ENABLED", True)
    monkeypatch.setattr(fn.plans, "fn", None)  # a replay runs none of the function
    replayed = launched(device, fn, args, kwargs)
    assert full[0], "the full call launched nothing"
    assert replayed == full


@pytest.mark.parametrize("m, with_bias", [(1, False), (3, True)])
def test_a_replayed_quant_matmul_launches_what_the_full_call_launches(
    device, monkeypatch, m, with_bias
):
    """`quant.matmul` keeps its plans on the weight, whose device tensors (codes,
    scales, the split-K workspace) are buffers a plan launches with as they are. u4,
    k = 1024, n = 256: m = 1 splits K (counters kept), m = 3 adds a bias."""
    w = rng.standard_normal((1024, 256)).astype(np.float32)
    qw = quant.quantize(w, "u4", group_size=128)

    def arguments():
        return (f16(m, 1024), qw), ({"bias": f16(256)} if with_bias else {})

    launched(device, quant.matmul, *arguments())
    device.keep()
    launched(device, quant.matmul, *arguments())
    (x, _), kwargs = arguments()
    plans = qw.__dict__["_kernel_cache"]["call plans"]
    assert plans.plan((x, kwargs.get("bias"), None, None, None)) is not None
    monkeypatch.setattr(call_plans, "ENABLED", False)
    full = launched(device, quant.matmul, (x, qw), kwargs)
    monkeypatch.setattr(call_plans, "ENABLED", True)
    monkeypatch.setattr(plans, "fn", None)
    assert full[0] and launched(device, quant.matmul, (x, qw), kwargs) == full


def test_what_the_replay_cannot_vouch_for_runs_in_full(device, monkeypatch):
    """An in-place update (conv_state) whose x overlaps the state, a misaligned x, and x
    passed as its own state: each is what the full call refuses, with its message."""
    fn, arguments = CASES["causal_conv1d_update"]
    for _ in range(3):
        args, kwargs = arguments()
        launched(device, fn, args, kwargs)
    x, state, weight, bias = arguments()[0]
    assert fn.plans.plan((x, state, weight, bias), kwargs) is not None
    memory = np.zeros(4096, np.uint8)
    memory = memory[-memory.ctypes.data % 16 :]
    state_over = Tensor(np.zeros((2, 64, 3), np.float16), memory[: 2 * 64 * 3 * 2])
    x_inside = Tensor(np.zeros((2, 64), np.float16), memory[256 : 256 + 256])
    with pytest.raises(ValueError, match="overlap"):
        fn(x_inside, state_over, weight, bias, **kwargs)
    misaligned = Tensor(np.zeros((2, 64), np.float16), memory[1026 : 1026 + 256])
    with pytest.raises(ValueError, match="16-byte boundary"):
        fn(misaligned, state, weight, bias, **kwargs)
    with pytest.raises((TypeError, ValueError)):
        fn(x, state, state, bias, **kwargs)


def test_tuples_and_lists_key_by_their_items_and_their_kind(device):
    """`window_size=(16, 0)` keys as its numbers: another window is another key, and so
    is the same window as a list (the function may treat the two apart)."""
    fn = K.flash_attention
    qkv = lambda: (f16(1, 40, 2, 64), f16(1, 40, 2, 64), f16(1, 40, 2, 64))  # noqa: E731
    launched(device, fn, qkv(), {"window_size": (16, 0)})  # makes what the library keeps
    device.keep()
    launched(device, fn, qkv(), {"window_size": (16, 0)})  # recorded
    assert fn.plans.plan(qkv(), {"window_size": (16, 0)}) is not None
    assert fn.plans.plan(qkv(), {"window_size": (16, 1)}) is None
    assert fn.plans.plan(qkv(), {"window_size": (16.0, 0)}) is None
    assert fn.plans.plan(qkv(), {"window_size": [16, 0]}) is None


def test_a_decode_loops_growing_max_seq_len_replays_one_plan_per_bucket(device, monkeypatch):
    """paged_decode_attention's splits depend on max_seq_len only through its bucket
    (`coarse_length`: 4097..4608 cover 4608 tokens), so a loop whose max_seq_len grows
    by one a step is recorded once a bucket and replayed after; the replay launches what
    the full call with that step's own max_seq_len launches, and the next bucket is
    another key."""
    fn = K.paged_decode_attention
    table = np.arange(2 * 300, dtype=np.int32).reshape(2, 300) % 6  # 4800 tokens a row

    def arguments():
        return (f16(2, 4, 64), f16(6, 16, 2, 64), f16(6, 16, 2, 64), i32(table), i32([40, 17]))

    launched(device, fn, arguments(), {"max_seq_len": 4097})  # makes what is kept
    device.keep()
    launched(device, fn, arguments(), {"max_seq_len": 4098})  # recorded
    args = arguments()
    assert fn.plans.plan(args, {"max_seq_len": 4608}) is not None
    assert fn.plans.plan(args, {"max_seq_len": 4609}) is None
    assert fn.plans.plan(args, {"max_seq_len": 4096}) is None
    monkeypatch.setattr(call_plans, "ENABLED", False)
    full = launched(device, fn, args, {"max_seq_len": 4321})
    monkeypatch.setattr(call_plans, "ENABLED", True)
    monkeypatch.setattr(fn.plans, "fn", None)  # a replay runs none of the function
    assert full[0] and launched(device, fn, args, {"max_seq_len": 4321}) == full


def test_chunked_prefills_changing_max_seqlen_q_replays_one_plan_per_bucket(device, monkeypatch):
    """flash_attention's grid takes max_seqlen_q rounded (`coarse_length`: 33..36 size it
    as 36) and max_seqlen_k is never launched with: calls whose max_seqlen_q shares a
    bucket share a plan whatever their max_seqlen_k, and a replay launches what the full
    call with its own values launches."""
    fn, arguments = CASES["flash_attention varlen, lse"]
    args, kwargs = arguments()
    launched(device, fn, args, {**kwargs, "max_seqlen_q": 34, "max_seqlen_k": 40})
    device.keep()
    args, _ = arguments()
    launched(device, fn, args, {**kwargs, "max_seqlen_q": 35, "max_seqlen_k": 50})  # recorded
    args, _ = arguments()
    assert fn.plans.plan(args, {**kwargs, "max_seqlen_q": 36, "max_seqlen_k": 7}) is not None
    assert fn.plans.plan(args, {**kwargs, "max_seqlen_q": 37, "max_seqlen_k": 50}) is None
    assert fn.plans.plan(args, {**kwargs, "max_seqlen_q": 35, "max_seqlen_k": -1}) is None
    exact = {**kwargs, "max_seqlen_q": 33, "max_seqlen_k": 40}
    monkeypatch.setattr(call_plans, "ENABLED", False)
    full = launched(device, fn, args, exact)
    monkeypatch.setattr(call_plans, "ENABLED", True)
    monkeypatch.setattr(fn.plans, "fn", None)  # a replay runs none of the function
    assert full[0] and launched(device, fn, args, exact) == full


def test_the_same_tensor_twice_is_another_key(device):
    """x passed as z too: another aliasing, so the full call's launch (z at x's
    address), not the plan of distinct tensors."""
    fn = K.selective_state_update

    def arguments(alias):
        state, x, dt = f32(2, 64, 16), f16(2, 64), f16(2, 64)
        z = x if alias else f16(2, 64)
        return (state, x, dt, f32(64, 16), f16(2, 16), f16(2, 16)), dict(z=z)

    for _ in range(3):
        launched(device, fn, *arguments(False))
    args, kwargs = arguments(True)
    assert fn.plans.plan(args, kwargs) is None
    launches, _ = launched(device, fn, args, kwargs)
    (pointers,) = [pointers for _, pointers, _, _, _ in launches]
    assert pointers["z"] == pointers["x"] == addresses(args[1])


def test_a_call_with_overlapping_arguments_is_not_recorded_and_spoils_nothing(device):
    """x and z read from overlapping memory: the full call runs (neither is written), a
    pointer into both could not be told apart, so it is not recorded; the next call of
    the key, apart, is."""
    fn = K.selective_state_update
    rest = lambda: (f16(2, 64), f32(64, 16), f16(2, 16), f16(2, 16))  # noqa: E731
    launched(device, fn, (f32(2, 64, 16), f16(2, 64), *rest()), dict(z=f16(2, 64)))
    memory = np.zeros(1024, np.uint8)
    memory = memory[-memory.ctypes.data % 16 :]
    x = Tensor(values(2, 64), memory[:256])
    z = Tensor(values(2, 64), memory[128:384])  # overlaps x's second half
    launches, _ = launched(device, fn, (f32(2, 64, 16), x, *rest()), dict(z=z))
    assert launches and fn.plans.plan((f32(2, 64, 16), x, *rest()), dict(z=z)) is None
    args = (f32(2, 64, 16), f16(2, 64), *rest())
    launched(device, fn, args, dict(z=f16(2, 64)))
    assert fn.plans.plan(args, dict(z=f16(2, 64))) is not None


def test_a_replay_forgets_value_facts_about_what_it_writes(device):
    fn, arguments = CASES["causal_conv1d_update"]
    for _ in range(2):
        launched(device, fn, *arguments())
    (x, state, weight, bias), kwargs = arguments()
    value_facts.record(state, 4)
    value_facts.record(weight, 4)
    launched(device, fn, (x, state, weight, bias), kwargs)
    assert fn.plans.plan((x, state, weight, bias), kwargs) is not None
    assert not value_facts.recorded_within(state, 4)
    assert value_facts.recorded_within(weight, 4)


def test_host_arrays_are_never_planned(device):
    x, w = rng.standard_normal((2, 32)).astype(np.float16), np.ones(32, np.float16)
    for _ in range(3):
        K.rms_norm(x, w)
    assert K.rms_norm.plans.plan((x, w)) is None


def test_memory_of_unknown_origin_leaves_a_function_unplanned(device):
    """A planned function whose launch reads a tensor it neither took nor reported
    (`call_plans.allocated`) runs in full every time."""
    calls = []

    @call_plans.planned
    def doubled_norm(x, w):
        calls.append(1)
        y = Tensor(np.zeros(x.shape, np.float16))  # not reported
        norm.rms_norm_kernel(x, w, y, 1e-6, **norm_constexprs())
        return y

    x, w = f16(2, 256), f16(256)
    for _ in range(4):
        launched(device, doubled_norm, (x, w), {})
    assert len(calls) == 4 and doubled_norm.plans.plan((x, w)) is None


def norm_constexprs():
    from tilelang import dtypes

    return dict(T=dtypes.f16, WT=dtypes.f16, BM=4, BH=256)


def test_a_call_that_raises_leaves_no_plan(device):
    """Beside a planned good call, a call with a weight of the wrong size raises every
    time (it is another key: no replay of the good one hides its error) and leaves no
    plan of its own."""
    for _ in range(3):
        K.rms_norm(f16(2, 256), f16(256))
    assert K.rms_norm.plans.plan((f16(2, 256), f16(256))) is not None
    x, w = f16(2, 256), f16(128)
    for _ in range(3):
        with pytest.raises(ValueError, match="weight"):
            K.rms_norm(x, w)
    assert K.rms_norm.plans.plan((x, w)) is None


def test_turned_off_nothing_is_planned(device, monkeypatch):
    monkeypatch.setattr(call_plans, "ENABLED", False)
    fn, arguments = CASES["silu_and_mul"]
    for _ in range(3):
        args, kwargs = arguments()
        launched(device, fn, args, kwargs)
    assert fn.plans.plan(args, kwargs) is None


def test_past_its_size_a_function_forgets_its_oldest_key_only(device, monkeypatch):
    """A decode step's shapes change as batches and sequences grow: a full memo drops
    its oldest key, and the others keep replaying."""
    monkeypatch.setattr(call_plans, "MAX_PLANS", 2)
    fn = K.silu_and_mul
    shapes = [(1, 64), (2, 64), (3, 64)]
    for shape in shapes:  # each: a full call, then the recorded one
        for _ in range(2):
            fn(f16(*shape))
    assert fn.plans.plan((f16(1, 64),)) is None
    assert fn.plans.plan((f16(2, 64),)) is not None
    assert fn.plans.plan((f16(3, 64),)) is not None

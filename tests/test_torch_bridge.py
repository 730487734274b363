"""tilelang.torch.op: kernels as torch custom operators. The operator's schema follows
from what the kernel reads and stores, its fake implementation gives the shapes and
dtypes the real one returns, the CPU implementation computes what numpy computes, torch's
own checks (opcheck, torch.compile(fullgraph=True)) pass, and bad arguments are refused
naming the parameter. References are numpy float64 (or integer) arithmetic."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import tilelang as tl
import tilelang.torch as tt
from tilelang import dtypes
from tilelang.torch import dtypes as td
from tilelang.torch.signature import INPLACE, INPUT, OUTPUT, tensor_roles

# ------------------------------------------------------------------------ kernels


@tl.kernel(warps=4)
def scale(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    alpha: tl.f32,
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.load(x, [bm * BM, bn * BN], [BM, BN]).to(tl.f32)
    tl.store(y, [bm * BM, bn * BN], (tile * alpha).to(T))


@tl.kernel(warps=4)
def head(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M", "N // R"],
    T: tl.constexpr = tl.f32,
    R: tl.constexpr = 2,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 32,
):
    """y = the first N // R columns of x."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N // R, BN))
    tl.store(y, [bm * BM, bn * BN], tl.load(x, [bm * BM, bn * BN], [BM, BN]))


@tl.kernel(warps=4)
def row_sum(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 64,
):
    bm = tl.blocks(tl.cdiv(M, BM))
    total = tl.zeros([BM], T)
    for n in tl.range(0, N, BN):
        total = total + tl.sum(tl.load(x, [bm * BM, n], [BM, BN]), axis=1)
    tl.store(y, [bm * BM], total)


@tl.kernel(warps=4)
def axpy(
    x: tl.Tensor[tl.f32, "N"],
    acc: tl.Tensor[tl.f32, "N"],
    alpha: tl.f32,
    BLOCK: tl.constexpr = 256,
):
    """acc += alpha * x, in place."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    start = b * BLOCK
    now = tl.load(acc, [start], [BLOCK])
    tl.store(acc, [start], now + tl.load(x, [start], [BLOCK]) * alpha)


@tl.kernel(warps=4)
def widen(w: tl.Tensor[tl.u4, "M", "N"], y: tl.Tensor[tl.i32, "M", "N"], BN: tl.constexpr = 64):
    bm, bn = tl.blocks(M, tl.cdiv(N, BN))
    tl.store(y, [bm, bn * BN], tl.load(w, [bm, bn * BN], [1, BN]).to(tl.i32))


@tl.kernel(warps=4)
def narrow(x: tl.Tensor[tl.u8, "M", "N"], w: tl.Tensor[tl.u4, "M", "N"], BN: tl.constexpr = 64):
    bm, bn = tl.blocks(M, tl.cdiv(N, BN))
    tl.store(w, [bm, bn * BN], tl.load(x, [bm, bn * BN], [1, BN]).to(tl.u4))


@tl.kernel(warps=4)
def split_bytes(x: tl.Tensor[tl.u8, "N"], y: tl.Tensor[tl.u4, "N2"]):
    tl.store(y, [0], tl.load(x, [0], [4]).view(tl.u4))


OPS = {
    "scale": tt.op(scale, "tltest::scale"),
    "scale_bf16_wide": tt.op(scale, "tltest::scale_wide", BN=128),
    "head2": tt.op(head, "tltest::head2"),
    "head4": tt.op(head, "tltest::head4", R=4),
    "row_sum": tt.op(row_sum, "tltest::row_sum"),
    "axpy": tt.op(axpy, "tltest::axpy"),
    "widen": tt.op(widen, "tltest::widen"),
    "narrow": tt.op(narrow, "tltest::narrow"),
}


def f64(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float64).numpy()


# ------------------------------------------------------------------------ dtypes


def test_every_named_dtype_has_a_torch_form_of_its_bits():
    for t in dtypes.NAMED_TYPES:
        form = td.torch_dtype(t)
        if t.bits < 8:
            assert form == torch.uint8 and td.is_packed(t)
        else:
            assert form.itemsize * 8 == t.bits, t
            assert td.tilelang_dtype(form) == t, t
    assert len(td.table()) == len(dtypes.NAMED_TYPES)


def test_floats_and_f8_map_to_the_same_formats():
    pairs = {
        "f16": torch.float16,
        "bf16": torch.bfloat16,
        "f8e4m3": torch.float8_e4m3fn,
        "f8e5m2": torch.float8_e5m2,
        "e8m0": torch.float8_e8m0fnu,
    }
    for name, form in pairs.items():
        assert td.torch_dtype(dtypes.dtype(name)) == form
    assert td.tilelang_dtype(torch.bool) is None
    assert td.tilelang_dtype(torch.float8_e4m3fnuz) is None


def test_packed_shapes_put_the_last_dimension_in_bytes():
    assert td.packed_shape(dtypes.u4, (3, 10), "w") == (3, 5)
    assert td.packed_shape(dtypes.dtype("u3"), (2, 8), "w") == (2, 3)
    assert td.logical_shape(dtypes.dtype("u3"), (2, 3), "w") == (2, 8)
    with pytest.raises(ValueError, match=r"w: .*multiple of 8"):
        td.packed_shape(dtypes.u4, (3, 5), "w")
    with pytest.raises(ValueError, match=r"w: .*whole u3"):
        td.logical_shape(dtypes.dtype("u3"), (2, 2), "w")


# ------------------------------------------------------------------------ signature


def test_roles_follow_loads_and_stores():
    assert tensor_roles(axpy.specialize()) == {"x": INPUT, "acc": INPLACE}
    assert tensor_roles(scale.specialize()) == {"x": INPUT, "y": OUTPUT}


def test_schema_lists_arguments_mutations_and_outputs():
    assert OPS["scale"].schema == "(Tensor x, float alpha) -> Tensor"
    assert OPS["axpy"].schema == "(Tensor x, Tensor(a!) acc, float alpha) -> ()"
    assert OPS["head2"].schema == "(Tensor x) -> Tensor"
    assert torch.ops.tltest.scale.default._schema.arguments[0].name == "x"


def test_an_output_size_no_argument_has_is_refused_when_registering():
    with pytest.raises(ValueError, match="output 'y' has size N2"):
        tt.op(split_bytes, "tltest::split_bytes")


def test_op_names_are_checked_and_registration_is_idempotent():
    assert tt.op(scale, "tltest::scale") is OPS["scale"]
    with pytest.raises(ValueError, match="already registered for another kernel"):
        tt.op(row_sum, "tltest::scale")
    # one schema a name: the same kernel with other constexprs needs its own name
    with pytest.raises(ValueError, match=r"with constexprs \{\}, not \{'R': 4\}: give each"):
        tt.op(head, "tltest::head2", R=4)
    with pytest.raises(ValueError, match="namespace::name"):
        tt.op(scale, "no_namespace")
    with pytest.raises(TypeError, match=r"kernel: expected a @tilelang.kernel"):
        tt.op(lambda x: x, "tltest::lambda")


# ------------------------------------------------------------------------ results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 70), (16, 64), (1, 1)])
def test_scale_computes_what_float64_rounds_to(dtype, shape):
    x = torch.randn(shape).to(dtype)
    y = OPS["scale"](x, 0.75)
    assert y.dtype == dtype and y.shape == x.shape
    expected = torch.from_numpy(f64(x) * 0.75).to(dtype)
    assert torch.equal(y, expected)


@pytest.mark.parametrize(
    ("name", "shape", "expected_shape"),
    [
        ("head2", (3, 10), (3, 5)),
        ("head2", (9, 130), (9, 65)),
        ("head4", (3, 10), (3, 2)),
        ("head4", (17, 64), (17, 16)),
        ("row_sum", (5, 70), (5,)),
        ("scale_bf16_wide", (3, 300), (3, 300)),
    ],
)
def test_fake_shapes_equal_real_shapes(name, shape, expected_shape):
    op = OPS[name]
    args = (1.5,) if name.startswith("scale") else ()
    x = torch.randn(shape, dtype=torch.bfloat16)
    real = op(x, *args)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = op(mode.from_tensor(x), *args)
    assert (tuple(real.shape), real.dtype) == (expected_shape, torch.bfloat16)
    assert (tuple(fake.shape), fake.dtype) == (tuple(real.shape), real.dtype)
    on_meta = op(x.to("meta"), *args)
    assert on_meta.device.type == "meta" and on_meta.shape == real.shape


def test_head_and_row_sum_values():
    x = torch.randn(9, 130, generator=torch.Generator().manual_seed(0))
    assert torch.equal(OPS["head4"](x), x[:, : 130 // 4])
    # An f32 sum of 130 terms, in the kernel's order: within a few f32 ulps of the
    # terms' magnitude (a row whose sum nearly cancels has no small relative error).
    scale = np.abs(f64(x)).sum(axis=1)
    error = np.abs(OPS["row_sum"](x).numpy() - f64(x).sum(axis=1))
    assert (error <= 1e-6 * scale).all()


def test_in_place_argument_is_mutated_and_nothing_returned():
    x = torch.randn(1000)
    acc = torch.randn(1000)
    before = f64(acc)
    assert OPS["axpy"](x, acc, 2.0) is None
    np.testing.assert_allclose(f64(acc), before + 2.0 * f64(x), rtol=1e-6, atol=1e-6)


def test_in_place_works_on_a_strided_view():
    base = torch.zeros(64, 2)
    x = torch.ones(64)
    OPS["axpy"](x, base[:, 0], 3.0)
    assert torch.equal(base[:, 0], torch.full((64,), 3.0)) and not base[:, 1].any()


def packed_u4(codes: np.ndarray) -> np.ndarray:
    """u4 codes [..., L] as bytes [..., L/2]: element 2i in the low nibble of byte i."""
    codes = codes.astype(np.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def test_packed_input_travels_as_uint8_bytes():
    codes = np.random.default_rng(1).integers(0, 16, (3, 100))
    w = torch.from_numpy(packed_u4(codes))
    y = OPS["widen"](w)
    assert y.shape == (3, 100) and y.dtype == torch.int32
    assert np.array_equal(y.numpy(), codes)


def test_packed_output_is_uint8_with_last_dimension_in_bytes():
    codes = np.random.default_rng(2).integers(0, 16, (4, 130)).astype(np.uint8)
    w = OPS["narrow"](torch.from_numpy(codes))
    assert w.shape == (4, 65) and w.dtype == torch.uint8
    assert np.array_equal(w.numpy(), packed_u4(codes))


# ------------------------------------------------------------------------ torch's checks


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("scale", lambda: (torch.randn(5, 70, dtype=torch.float16), 0.5)),
        ("head4", lambda: (torch.randn(9, 64),)),
        ("axpy", lambda: (torch.randn(300), torch.randn(300), 0.25)),
        ("widen", lambda: (torch.randint(0, 256, (2, 32), dtype=torch.uint8),)),
    ],
)
def test_opcheck_passes(name, make):
    torch.library.opcheck(OPS[name].overload, make())


def test_torch_compile_fullgraph_dynamic_shapes_has_no_graph_break():
    class Block(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return OPS["row_sum"](OPS["head2"](OPS["scale"](torch.relu(x), 2.0))) + 1.0

    torch._dynamo.reset()
    model = Block()
    # dynamic=True: the fake implementation runs on symbolic sizes (N // 2 of a SymInt)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="inductor")
    for shape in [(6, 70), (9, 130)]:
        x = torch.randn(shape)
        assert torch.equal(compiled(x), model(x))
    explained = torch._dynamo.explain(model)(torch.randn(6, 70))
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_the_cuda_implementation_is_registered():
    for name in ("tltest::scale", "tltest::axpy"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")


def test_the_cuda_launch_compiles_for_sm80_and_sm90_without_a_gpu():
    x = torch.empty(64, 256, dtype=torch.float16, device="meta")
    for arch in ("sm_80", "sm_90a"):
        build = OPS["scale"].build_for(x, 1.0, target=arch)
        assert build.target == arch and len(build.cubin) > 0
        assert "alpha" in build.source


# ------------------------------------------------------------------------ errors


def test_wrong_dtype_names_the_parameter():
    with pytest.raises(TypeError, match=r"parameter 'x' expects a tensor of torch.float32 \(f32\)"):
        OPS["axpy"](torch.zeros(8, dtype=torch.float16), torch.zeros(8), 1.0)
    with pytest.raises(
        TypeError, match=r"parameter 'w' expects a tensor of torch.uint8 \(packed u4"
    ):
        OPS["widen"](torch.zeros(2, 8, dtype=torch.int8))
    with pytest.raises(TypeError, match="parameter 'x' gives the dtype T, but is a bool tensor"):
        OPS["scale"](torch.zeros(2, 8, dtype=torch.bool), 1.0)


def test_wrong_shape_names_the_parameter():
    with pytest.raises(
        ValueError,
        match=r"parameter 'acc': dimension 0 should be N = 8 \(from x.shape\[0\]\), got 9",
    ):
        OPS["axpy"](torch.zeros(8), torch.zeros(9), 1.0)
    with pytest.raises(ValueError, match=r"parameter 'x' expects 2 dimensions \[M, N\]"):
        OPS["scale"](torch.zeros(8), 1.0)


@tl.kernel(warps=4)
def dequantize(
    q: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor[tl.f16, "K // G", "N"],
    w: tl.Tensor[tl.f16, "K", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 32,
    BN: tl.constexpr = 64,
):
    """The guide's dequantize kernel (docs/guide.md, low-bit tensors)."""
    g, bn = tl.blocks(K // G, tl.cdiv(N, BN))
    codes = tl.load(q, [g * G, bn * BN], [G, BN])
    tl.store(w, [g * G, bn * BN], codes.to(tl.f16) * tl.load(s, [g, bn * BN], [1, BN]))


def test_a_wrong_size_says_where_each_size_came_from_as_a_numpy_call_does():
    """The operator and the kernel's numpy call give one message: the size's value and
    the argument dimension it was read from, and the parameter's declared shape."""
    dequantize_op = tt.op(dequantize, "tltest::dequantize", WT=tl.u4)
    codes = torch.zeros(64, 20, dtype=torch.uint8)  # u4 codes [64, 40], two per byte
    expected = (
        r"parameter 's': dimension 1 should be N = 40 \(from q.shape\[1\]\), "
        r"got 48 \(expected shape \[K // 32, N\]\)"
    )
    with pytest.raises(ValueError, match=expected):
        dequantize_op(codes, torch.ones(2, 48, dtype=torch.float16))
    packed = tl.pack_codes(np.zeros((64, 40), np.int64), tl.u4)
    with pytest.raises(ValueError, match=expected):
        dequantize(packed, np.ones((2, 48), np.float16), np.empty((64, 40), np.float16))


def test_a_packed_tensor_must_be_contiguous():
    w = torch.zeros(4, 64, dtype=torch.uint8)[:, ::2]
    with pytest.raises(ValueError, match="parameter 'w': a packed u4 tensor must be contiguous"):
        OPS["widen"](w)


@tl.kernel(warps=4)
def add_codes(
    x: tl.Tensor[tl.i32, "M", "N"], w: tl.Tensor[tl.u4, "M", "N"], y: tl.Tensor[tl.i32, "M", "N"]
):
    bm = tl.blocks(M)
    tl.store(y, [bm, 0], tl.load(x, [bm, 0], [1, 64]) + tl.load(w, [bm, 0], [1, 64]).to(tl.i32))


def test_a_size_error_about_a_packed_tensor_counts_its_bytes_as_elements():
    add = tt.op(add_codes, "tltest::add_codes")
    x = torch.zeros(2, 64, dtype=torch.int32)
    w = torch.zeros(2, 31, dtype=torch.uint8)  # 62 u4 codes where x says 64
    with pytest.raises(ValueError, match="parameter 'w'") as raised:
        add(x, w)
    assert "its torch.uint8 last dimension of 31 bytes holds 62 u4 elements" in str(raised.value)


def test_tilelang_does_not_import_torch():
    code = "import sys, tilelang; assert 'torch' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


# ------------------------------------------------------------------------ ready kernels


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [(torch.float32, 1e-5), (torch.float16, 2.0**-10), (torch.bfloat16, 2.0**-7)],
)
def test_rms_norm_and_silu_and_mul_ops_match_float64(dtype, tolerance):
    from tilelang.torch.kernels import rms_norm, silu_and_mul

    x = torch.randn(2, 3, 300).to(dtype)
    w = torch.rand(300) + 0.5
    y = rms_norm(x, w, eps=1e-5)
    x64 = f64(x)
    expected = x64 / np.sqrt((x64**2).mean(axis=-1, keepdims=True) + 1e-5) * f64(w)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(f64(y), expected, rtol=tolerance, atol=tolerance)
    gated = silu_and_mul(x)
    gate, up = x64[..., :150], x64[..., 150:]
    assert gated.shape == (2, 3, 150)
    expected = gate / (1 + np.exp(-gate)) * up
    np.testing.assert_allclose(f64(gated), expected, rtol=tolerance, atol=tolerance)


def test_inputs_requiring_grad_run_and_outputs_carry_no_gradient(monkeypatch):
    from tilelang.runtime import host_calls

    monkeypatch.setattr(host_calls, "WARNED", set())
    x = torch.randn(4, 64, requires_grad=True)
    with pytest.warns(tt.NoGradientWarning):
        y = OPS["scale"](x, 2.0)
    assert not y.requires_grad
    assert torch.equal(y, (x.detach().double() * 2.0).float())
    torch.library.opcheck(OPS["scale"].overload, (x, 2.0))


def test_an_op_on_a_tensor_requiring_grad_warns_once_that_no_gradient_flows(monkeypatch):
    import warnings

    from tilelang.runtime import host_calls
    from tilelang.torch.kernels import rms_norm

    monkeypatch.setattr(host_calls, "WARNED", set())
    x = torch.randn(4, 64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            OPS["scale"](x, 2.0)
    with pytest.warns(tt.NoGradientWarning, match=r"tltest::scale.*no gradient") as record:
        y = OPS["scale"](x, 2.0)
    assert y.grad_fn is None
    assert [r.filename for r in record] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OPS["scale"](x, 2.0)  # once per operator
    with pytest.warns(tt.NoGradientWarning, match=r"tilelang::rms_norm") as record:
        rms_norm(x, torch.ones(64))  # through the wrapper: still the caller's line
    assert [r.filename for r in record] == [__file__]


def test_in_place_bumps_the_version_counter():
    acc = torch.zeros(64)
    before = acc._version
    OPS["axpy"](torch.ones(64), acc, 1.0)
    assert acc._version > before


@pytest.fixture
def gpu_launches(monkeypatch):
    """The kernel's GPU call with the driver stubbed: what reaches `gpu.launch`."""
    from tilelang.runtime import gpu

    launches = []
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")
    monkeypatch.setattr(gpu, "current_stream", lambda tensors: 5)
    monkeypatch.setattr(gpu, "launch", lambda build, *args: launches.append(args))
    return launches


def as_cuda(arguments):
    return [CudaTensorStandIn(a) if isinstance(a, torch.Tensor) else a for a in arguments]


def test_cuda_launch_arguments_are_the_tensors_own_pointers(gpu_launches):
    """The CUDA implementation's argument step, run on CPU tensors: it allocates only the
    outputs and hands the kernel's GPU call the tensors themselves (a packed one as its
    bytes seen as its dtype); that call launches on their pointers."""
    op = OPS["widen"]
    w = torch.randint(0, 256, (3, 32), dtype=torch.uint8)
    shaped, outputs, arguments = op.device_arguments([w], torch.device("cpu"))
    (y,) = outputs
    assert (tuple(y.shape), y.dtype) == ((3, 64), torch.int32)
    (packed, given_y) = arguments
    assert given_y is y and packed.dtype == tl.u4 and packed.shape == (3, 64)
    assert packed.pointer == w.data_ptr()
    op.kernel(packed, CudaTensorStandIn(y), **shaped.variant.constexprs)
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    shaped, (out,), arguments = OPS["scale"].device_arguments([x, 0.5], torch.device("cpu"))
    assert arguments[0] is x and arguments[1] is out and arguments[2] == 0.5
    OPS["scale"].kernel(*as_cuda(arguments), **shaped.variant.constexprs)
    (widened, scaled) = gpu_launches
    assert widened[0] == {"w": w.data_ptr(), "y": y.data_ptr()}
    assert widened[1] == {"M": 3, "N": 64}
    assert scaled[0] == {"x": x.data_ptr(), "y": out.data_ptr()}
    assert scaled[1]["alpha"] == 0.5


def test_cuda_launch_arguments_refuse_what_a_launch_cannot_take(gpu_launches):
    acc = torch.zeros(64)
    op = OPS["axpy"]
    shaped, _, arguments = op.device_arguments([acc, acc, 1.0], torch.device("cpu"))
    with pytest.raises(ValueError, match="'x' and 'acc' overlap in memory"):
        op.kernel(*as_cuda(arguments), **shaped.variant.constexprs)
    strided = torch.zeros(64, 2)[:, 0]
    shaped, _, arguments = op.device_arguments([torch.zeros(64), strided, 1.0], torch.device("cpu"))
    # acc is written: a .contiguous() copy would get the results, so that is not the advice
    with pytest.raises(
        ValueError, match=r"'acc' must be C-contiguous on the GPU \(the kernel writes it"
    ):
        op.kernel(*as_cuda(arguments), **shaped.variant.constexprs)
    assert not gpu_launches


class CudaTensorStandIn:
    """What a kernel call reads of a CUDA torch tensor, over a CPU tensor's memory: a
    type from the torch module that says it is on CUDA, and whose DLPack export and
    array interface fail, since the call should read the tensor's own attributes."""

    __module__ = "torch"
    is_cuda = True

    def __init__(self, base: torch.Tensor, device: int = 0):
        self.base, self.dtype, self.shape = base, base.dtype, base.shape
        self.device = torch.device("cuda", device)

    def element_size(self):
        return self.base.element_size()

    def stride(self):
        return self.base.stride()

    def data_ptr(self):
        return self.base.data_ptr()

    def __dlpack__(self, **kwargs):
        raise AssertionError("a DLPack capsule was made")

    def __dlpack_device__(self):
        raise AssertionError("the DLPack device was asked")

    @property
    def __cuda_array_interface__(self):
        raise AssertionError("the array interface was built")


def test_a_direct_call_reads_a_cuda_tensor_off_the_tensor(monkeypatch):
    """A kernel called on CUDA torch tensors reads each one's pointer, shape, strides and
    dtype (bf16 included) off the tensor: no DLPack capsule, no array interface."""
    from tilelang.runtime import dlpack, gpu

    base = torch.randn(8, 64).to(torch.bfloat16)
    view = dlpack.imported(CudaTensorStandIn(base))
    assert isinstance(view, dlpack.DeviceView) and view.dtype == tl.bf16
    assert (view.pointer, view.shape, view.strides) == (base.data_ptr(), (8, 64), (128, 2))
    launches = []
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")
    monkeypatch.setattr(gpu, "current_stream", lambda tensors: 5)
    monkeypatch.setattr(gpu, "launch", lambda build, *args: launches.append(args))
    x, y = CudaTensorStandIn(base), CudaTensorStandIn(torch.empty(8, 64, dtype=torch.bfloat16))
    scale(x, y, 0.5, T=tl.bf16)
    ((pointers, scalars, grid, stream),) = launches
    assert pointers == {"x": base.data_ptr(), "y": y.data_ptr()} and stream == 5
    assert scalars["alpha"] == 0.5 and tuple(grid) == (1, 1)
    with pytest.raises(
        ValueError, match=r"'x' must be C-contiguous on the GPU \(call \.contiguous"
    ):
        scale(CudaTensorStandIn(torch.randn(64, 8).to(torch.bfloat16).T), y, 0.5, T=tl.bf16)
    with pytest.raises(ValueError, match="'x' is on CUDA device 1; tilelang launches on device 0"):
        scale(CudaTensorStandIn(base, device=1), y, 0.5, T=tl.bf16)  # a warm key for device 0
    assert len(launches) == 1
    with pytest.raises(
        TypeError,
        match=r"'x' expects a tensor of bf16, got a CudaTensorStandIn of f32 "
        r"\(T=bf16, given to the call, is the dtype of 'x', 'y'\)$",
    ):
        scale(CudaTensorStandIn(torch.randn(8, 64)), y, 0.5, T=tl.bf16)


def test_importing_the_bridge_without_torch_says_how_to_install_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import tilelang.torch\nexcept ImportError as e:\n    print(e)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'tilelang[torch]'" in done.stdout, done.stderr


# ------------------------------------------------------------------------ on a GPU


def cuda_ready() -> bool:
    from tilelang.runtime import gpu

    return torch.cuda.is_available() and gpu.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA device and torch with CUDA")
def test_cuda_op_under_graph_capture_and_replay_equals_eager():
    x = torch.randn(37, 300, device="cuda", dtype=torch.float16)
    eager = OPS["scale"](x, 0.5)  # also the warm-up: compiles and loads the cubin
    torch.cuda.synchronize()
    expected = torch.from_numpy(f64(x.cpu()) * 0.5).half()
    assert torch.equal(eager.cpu(), expected)
    acc = torch.zeros(1000, device="cuda")
    ones = torch.ones(1000, device="cuda")
    OPS["axpy"](ones, acc, 1.0)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = OPS["scale"](x, 0.5)
        OPS["axpy"](ones, acc, 2.0)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured.cpu(), expected)
    assert torch.equal(acc.cpu(), torch.full((1000,), 7.0))  # 1 eager + 3 replays of 2


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA device and torch with CUDA")
def test_packed_and_bf16_tensors_launch_on_cuda_like_the_cpu():
    codes = np.random.default_rng(3).integers(0, 16, (5, 128))
    w = torch.from_numpy(packed_u4(codes))
    assert np.array_equal(OPS["widen"](w.cuda()).cpu().numpy(), codes)
    x = torch.randn(9, 130, dtype=torch.bfloat16)
    assert torch.equal(OPS["head4"](x.cuda()).cpu(), OPS["head4"](x))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA device and torch with CUDA")
def test_library_calls_replayed_and_captured_equal_the_first_call(monkeypatch):
    """tilelang.kernels.rms_norm and a bf16 QuantLinear on CUDA: the first call (full),
    the second (recorded), the third (replayed by its call plan) and a CUDA graph of the
    replay give the same bits; the first is the CPU backend's within rounding."""
    import tilelang.kernels as K
    from tilelang import quant
    from tilelang.torch import QuantLinear

    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")  # the default tiles: no timed trials
    x = torch.randn(3, 512, device="cuda", dtype=torch.float16)
    w = torch.randn(512, device="cuda", dtype=torch.float16)
    calls = [K.rms_norm(x, w) for _ in range(3)]
    host = K.rms_norm(x.cpu(), w.cpu())
    assert torch.allclose(calls[0].cpu().float(), host.float(), rtol=2e-3, atol=2e-3)
    weights = np.random.default_rng(4).standard_normal((512, 256)).astype(np.float32)
    layer = QuantLinear(quant.quantize(weights, "u4", group_size=128, scale_dtype="bf16")).cuda()
    xb = torch.randn(2, 512, device="cuda", dtype=torch.bfloat16)
    outputs = [layer(xb) for _ in range(3)]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_norm, captured_linear = K.rms_norm(x, w), layer(xb)
    graph.replay()
    torch.cuda.synchronize()
    for result in (*calls[1:], captured_norm):
        assert torch.equal(result, calls[0])
    for result in (*outputs[1:], captured_linear):
        assert torch.equal(result, outputs[0])
    assert torch.allclose(
        outputs[0].cpu().float(), layer.cpu()(xb.cpu()).float(), rtol=1e-2, atol=1e-2
    )


def test_a_warm_call_neither_rederives_nor_recompiles(monkeypatch):
    from tilelang.torch import signature

    kernel_module = sys.modules["tilelang.kernel"]  # `tilelang.kernel` is the decorator

    x = torch.randn(4, 96)
    first = OPS["scale"](x, 1.0)

    def refuse(*args, **kwargs):
        raise AssertionError("a warm call re-derived or recompiled")

    monkeypatch.setattr(signature.OpSignature, "of", refuse)
    monkeypatch.setattr(kernel_module, "run_pipeline", refuse)
    monkeypatch.setattr(kernel_module, "lower_function", refuse)
    assert torch.equal(OPS["scale"](x, 1.0), first)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        assert OPS["scale"](mode.from_tensor(x), 1.0).shape == x.shape
    with pytest.raises(AssertionError, match="re-derived or recompiled"):
        OPS["scale"](torch.randn(4, 96, dtype=torch.float64), 1.0)  # a new dtype: derives


def test_selective_scan_op_matches_the_float64_recurrence_and_passes_opcheck():
    from test_kernels_ssm import scan_inputs, scan_reference

    import tilelang.torch.kernels as tk

    arrays = scan_inputs(2, 8, 5, 37, seed=3)
    t = {name: torch.from_numpy(value) for name, value in arrays.items()}
    out, last = tk.selective_scan(
        t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
        delta_softplus=True, return_last_state=True,
    )  # fmt: skip
    expected, state = scan_reference(
        arrays["u"], arrays["delta"], arrays["A"], arrays["B"], arrays["C"], arrays["D"],
        arrays["z"], arrays["delta_bias"], softplus_delta=True,
    )  # fmt: skip
    assert out.dtype == torch.float32 and last.shape == (2, 8, 5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(last.numpy(), state, rtol=2e-4, atol=2e-4)
    op = torch.ops.tilelang.selective_scan.default
    torch.library.opcheck(
        op, (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    )
    bf16 = {k: v.bfloat16() if v.dim() == 3 else v for k, v in t.items()}
    torch.library.opcheck(
        op, (bf16["u"], bf16["delta"], t["A"], bf16["B"], bf16["C"], None, None, None, False)
    )
    only_out = tk.selective_scan(bf16["u"], bf16["delta"], t["A"], bf16["B"], bf16["C"])
    plain, _ = scan_reference(
        *(bf16[k].float().numpy() for k in ("u", "delta")), arrays["A"],
        *(bf16[k].float().numpy() for k in ("B", "C")),
    )  # fmt: skip
    assert only_out.dtype == torch.bfloat16
    np.testing.assert_allclose(only_out.float().numpy(), plain, rtol=1e-2, atol=1e-2)


def test_selective_scan_op_fake_shapes_and_cuda_registration():
    import tilelang.torch.kernels as tk

    with torch._subclasses.fake_tensor.FakeTensorMode():
        u, A = torch.empty(3, 16, 50, dtype=torch.float16), torch.empty(16, 7)
        B = torch.empty(3, 7, 50, dtype=torch.float16)
        out, last = tk.selective_scan(u, u, A, B, B, return_last_state=True)
        with pytest.raises(ValueError, match=r"u must be \[batch, Dm, L\]"):
            tk.selective_scan(torch.empty(16, 50), torch.empty(16, 50), A, B, B)
    assert (out.shape, out.dtype) == ((3, 16, 50), torch.float16)
    assert (last.shape, last.dtype) == ((3, 16, 7), torch.float32)
    assert torch._C._dispatch_has_kernel_for_dispatch_key("tilelang::selective_scan", "CUDA")


def test_a_launch_goes_on_torchs_current_stream(monkeypatch):
    """The stream a GPU call launches on is torch's current one on the tensor's device,
    asked of torch's raw query; a tensor read into a DeviceView still names it."""
    from tilelang.runtime import dlpack, gpu

    asked = []

    def raw_stream(index):
        asked.append(index)
        return 0x1234

    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", raw_stream, raising=False)
    tensor = CudaTensorStandIn(torch.zeros(4))
    assert gpu.current_stream([3.0, tensor]) == 0x1234
    assert gpu.current_stream([dlpack.imported(tensor)]) == 0x1234
    assert asked == [0, 0]

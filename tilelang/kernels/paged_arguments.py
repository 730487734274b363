"""The arguments of `paged_decode_attention` (`tilelang.kernels.paged_attention`), and
of paged prefill's caches and scales (`tilelang.kernels.paged_prefill`), checked before
a launch: the KV cache's shape and dtype (with what to do instead for
the layouts a user is likely to try: a u4 cache handed over as uint8 bytes, the fnuz f8
types), the sequence lengths against the block table and `max_seq_len`, and how the
split kernel dequantizes the cache (`Dequantization`: its MODE and flags, the scale and
zero-point tensors it reads, the numbers an f8 scale folds into).

vLLM hands k_scale and v_scale to every attention backend, for unquantized caches too
(1.0 there): a scale of exactly 1 is taken with an f16/bf16 cache and ignored; any other
value is refused, since nothing would apply it. A device tensor's values are not read
(a call copies nothing from the device: CUDA graphs), so there only its shape is checked.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.runtime import gpu

from .common import address_and_strides, check, dtype_of, reshaped, shape_of, span_of

#: The KV cache's dtypes besides q's own.
QUANTIZED = (dtypes.f8e4m3, dtypes.f8e5m2, dtypes.u8, dtypes.u4)
#: The f8 caches: one scale per tensor or per KV head.
FLOAT8 = (dtypes.f8e4m3, dtypes.f8e5m2)

# How a KV cache is dequantized (the split kernel's MODE).
PLAIN, HEAD_SCALED, TOKEN_SCALED = 0, 1, 2

#: What a cache may hold besides q's dtype, by dtype, for the messages.
NAMES = {
    dtypes.f8e4m3: "f8e4m3 (float8_e4m3fn)",
    dtypes.f8e5m2: "f8e5m2 (float8_e5m2)",
    dtypes.u8: "u8 (uint8)",
    dtypes.u4: "u4 (a tilelang.PackedArray)",
}
#: What a paged decode's cache may hold, for the messages.
ACCEPTED = "f8e4m3 (float8_e4m3fn), f8e5m2 (float8_e5m2), u8 (uint8) or u4 (a tilelang.PackedArray)"

#: How to hand over a u4 cache, for the messages.
U4_HOWTO = (
    "a u4 cache (two codes a byte) must be a tilelang.PackedArray of logical shape "
    "[num_blocks, block_size, H_kv, D]: tilelang.pack_codes(codes, 'u4') from uint8 codes "
    "0..15 of that shape, or tilelang.PackedArray(packed.reshape(-1), tilelang.u4, shape) "
    "over bytes packed low nibble first. A PackedArray lives on the host (the CPU "
    "backend); no device tensor, torch's included, passes a u4 cache (the torch "
    "operator has no u4 form)"
)


def cache_layout(x: Any, name: str) -> tuple[tuple[int, ...], DType | None]:
    """A cache's logical shape and dtype (None: no dtype tilelang has; a u4 cache is a
    PackedArray). A host tensor of a dtype no view is made for (torch's fnuz f8) comes
    as it is: its shape and None, so that the dtype check names what it holds."""
    if isinstance(x, PackedArray):
        return x.shape, x.dtype
    try:
        shape = shape_of(x, name)
    except TypeError:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return tuple(map(int, x.shape)), None
        raise
    return shape, dtype_of(x, name)


def given_type(x: Any) -> str:
    """The name of what x holds, as its library calls it (float8_e4m3fnuz, torch.uint8)."""
    if isinstance(x, PackedArray):
        return str(x.dtype)
    named = getattr(x, "dtype", None)
    if isinstance(named, np.dtype):
        return named.name
    if named is not None:
        return str(named)
    interface = getattr(x, "__cuda_array_interface__", {})
    return str(interface.get("typestr", type(x).__name__))


def check_cache_type(
    x: Any,
    kt: DType | None,
    t: DType,
    kd: int,
    d: int,
    other: str = "q",
    quantized: tuple[DType, ...] = QUANTIZED,
) -> None:
    """k_cache's dtype (`kt`, None: none tilelang has) and head dimension `kd` against
    the dtype `t` and D of `other` (q for attention, key for the cache writer), the
    cache taking `t` or one of `quantized` (paged prefill: the f8 types alone): a
    message that says what was given and what is taken."""
    accepted = ACCEPTED
    if quantized != QUANTIZED:
        names = [NAMES[c] for c in quantized]
        accepted = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    if kt is None:
        given = given_type(x)
        hint = ""
        if "fnuz" in given:
            hint = (
                "; the fnuz f8 types (exponent bias one higher, no inf, no negative zero) are "
                "not taken: convert the cache to float8_e4m3fn or float8_e5m2"
            )
        raise TypeError(f"k_cache must hold {other}'s dtype ({t}), {accepted}, got {given}{hint}")
    if kt == dtypes.u8 and dtypes.u4 in quantized and 2 * kd == d:
        raise ValueError(
            f"k_cache is uint8 [..., {kd}] and {other}'s D = {d}: {U4_HOWTO}; a uint8 cache is u8 "
            f"codes, one a byte, [num_blocks, block_size, H_kv, {d}]"
        )
    if kt not in (t, *quantized):
        raise TypeError(f"k_cache must hold {other}'s dtype ({t}), {accepted}, got {kt}")
    if kd != d:
        raise ValueError(f"k_cache's head dimension must be {other}'s, D = {d}, got {kd}")


def check_max_seq_len(max_seq_len: Any) -> None:
    if max_seq_len is None:
        return
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, (int, np.integer)):
        raise ValueError(
            f"max_seq_len must be an int (at least the longest of seq_lens) or None, got "
            f"{max_seq_len!r}"
        )
    if max_seq_len < 0:
        raise ValueError(f"max_seq_len must be >= 0 (the longest of seq_lens), got {max_seq_len}")


def check_lengths(
    block_table: Any,
    seq_lens: Any,
    blocks: int,
    bs: int,
    max_seq_len: int | None,
    names: tuple[str, str] = ("seq_lens", "max_seq_len"),
) -> None:
    """On the host: every length in 0..max_blocks · block_size and at most max_seq_len,
    and every page a sequence uses inside the cache. Device tensors are not read: there
    the kernel reads the first max_blocks · block_size tokens at most, zeros for pages
    outside the cache, and a sequence longer than max_seq_len is still read whole (its
    last split takes the tokens past the others). `names`: what the caller calls the
    lengths and their bound (`paged_prefill`: seqused_k, max_seqlen_k), for the
    messages."""
    if not isinstance(seq_lens, np.ndarray) or not isinstance(block_table, np.ndarray):
        return
    lengths, bound = names
    capacity = block_table.shape[1] * bs
    for b, n in enumerate(seq_lens.tolist()):
        if not 0 <= n <= capacity:
            raise ValueError(
                f"{lengths}[{b}] = {n} must be in 0..max_blocks · block_size = "
                f"{block_table.shape[1]} · {bs} = {capacity}"
            )
        if max_seq_len is not None and n > max_seq_len:
            why = " (it sizes the splits)" if bound == "max_seq_len" else ""
            raise ValueError(
                f"{lengths}[{b}] = {n} is above {bound} = {max_seq_len}: {bound} must "
                f"be at least the longest sequence{why}"
            )
        used = block_table[b, : -(-n // bs)]
        bad = used[(used < 0) | (used >= blocks)]
        if bad.size:
            raise ValueError(
                f"block_table[{b}] names page {int(bad[0])} for its first {n} tokens; pages "
                f"are 0..{blocks - 1} (num_blocks = {blocks})"
            )


def _like(like: Any, host: np.ndarray) -> Any:
    """A host array copied to where `like` lives (a device tensor)."""
    if gpu.is_torch_tensor(like):
        import torch  # a torch tensor was handed over, so torch is there

        return torch.from_numpy(host).to(like.device)
    return gpu.DeviceBuffer(host)


def _head_scale(value: Any, name: str, kt: DType, kv_heads: int, like: Any) -> Any:
    """An f8 cache's scale: a number (a number or a host array of one element, per
    tensor: no tensor at all, it is folded into the kernel's scalars), or f32 [1, 1] or
    [1, H_kv] (a device tensor of one element, 0-d too, or [H_kv], viewed; a host array
    [H_kv], copied to the device when the cache is there: pass a device tensor to avoid
    it)."""
    if value is None:
        raise ValueError(f"{name} is needed with an {kt} cache (a number, or f32 [H_kv])")
    if isinstance(value, (int, float, np.floating, np.integer, np.ndarray)):
        if isinstance(value, np.ndarray) and value.dtype.kind not in "fiu":
            raise TypeError(  # complex or bool would cast silently, strings with numpy's words
                f"{name} must hold real numbers (f32 preferred), got {value.dtype.name}"
            )
        flat = np.asarray(value, np.float32).reshape(-1)
        if flat.size not in (1, kv_heads):
            raise ValueError(
                f"{name} must be one number or hold one per KV head ([{kv_heads}]), got shape "
                f"{list(np.shape(value))}"
            )
        if not np.isfinite(flat).all():
            raise ValueError(f"{name} must be finite")
        if flat.size == 1:
            return np.float32(flat[0])
        host = np.ascontiguousarray(flat).reshape(1, kv_heads)
        return host if isinstance(like, np.ndarray) else _like(like, host)
    if shape_of(value, name) == ():  # a 0-d device tensor (vLLM's layer._k_scale)
        check(value, name, (), (dtypes.f32,))
        return reshaped(value, (1, 1), name)
    (size,), _ = check(value, name, (None,), (dtypes.f32,), ("1 or H_kv",))
    if size not in (1, kv_heads):
        raise ValueError(
            f"{name} must hold one scale or one per KV head ([{kv_heads}]), got shape [{size}]"
        )
    return reshaped(value, (1, size), name)


def _token_params(value: Any, name: str, shape: tuple[int, ...], required: bool) -> Any:
    """A u8/u4 cache's per-token scales or zero points, f32 [num_blocks, block_size,
    H_kv], viewed as [num_blocks · block_size, H_kv] (the cache's rows); None for
    absent zero points (the kernel then uses 2^(bits − 1))."""
    if value is None:
        if required:
            raise ValueError(
                f"{name} is needed with a u8/u4 cache: f32 [num_blocks, block_size, H_kv] = "
                f"{list(shape)}"
            )
        return None
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value, np.float32) if value.dtype.kind == "f" else value
    check(value, name, shape, (dtypes.f32,))
    return reshaped(value, (shape[0] * shape[1], shape[2]), name)


def _unit_scale(value: Any, name: str, kt: DType, kv_heads: int) -> None:
    """An unquantized cache's k_scale / v_scale, which vLLM always passes: absent, or
    exactly 1 (a number, a host array of one element or one per KV head), ignored. A
    device tensor of one element or one per KV head is taken unread (its values would
    cost a copy from the device, which a call never makes: CUDA graphs)."""
    if value is None:
        return
    why = f"an unquantized cache ({kt}) is used as it is, not scaled"
    if isinstance(value, (int, float, np.floating, np.integer, np.ndarray)):
        flat = np.asarray(value, np.float64).reshape(-1)
        if flat.size in (1, kv_heads) and (flat == 1.0).all():
            return
        given = repr(value) if np.ndim(value) == 0 else f"shape {list(np.shape(value))} {flat}"
        raise ValueError(
            f"{name} must be 1 or absent: {why} (scales are for {ACCEPTED} caches); got {given}"
        )
    shape = shape_of(value, name)
    if len(shape) > 1 or int(np.prod(shape)) not in (1, kv_heads):
        raise ValueError(
            f"{name} must be 1 or absent: {why}; a device tensor must hold one element or one "
            f"per KV head ([{kv_heads}]), got shape {list(shape)}"
        )


@dataclass(frozen=True)
class Dequantization:
    """How the split kernel dequantizes one call's cache: its MODE and flags, the scale
    and zero-point tensors it reads (None: not read), and the numbers a per-tensor f8
    scale folds into (s_k into the softmax scale, s_v the output's factor)."""

    mode: int
    ks: Any = None
    kz: Any = None
    vs: Any = None
    vz: Any = None
    k_factor: float = 1.0
    v_factor: float = 1.0

    def tensors(self, spare: Any) -> list[Any]:
        """ks, kz, vs, vz for the launch. A slot the kernel does not read gets a tensor
        that exists already: one it reads (the four bind the same sizes), else `spare`
        (f32 [1, 1]), so that a launch allocates and copies nothing for it."""
        slots = [self.ks, self.kz, self.vs, self.vz]
        fill = next((t for t in slots if t is not None), spare)
        return [fill if t is None else t for t in slots]

    def reads(self) -> tuple[bool, bool]:
        """Whether the kernel reads K's and V's per-head scales (f8) or zero points
        (u8, u4): the flags that pick its build (`default_tiles`)."""
        if self.mode == HEAD_SCALED:
            return self.ks is not None, self.vs is not None
        if self.mode == TOKEN_SCALED:
            return self.kz is not None, self.vz is not None
        return True, True

    def constexprs(self) -> dict[str, Any]:
        k, v = self.reads()
        if self.mode == HEAD_SCALED:
            return dict(MODE=self.mode, K_HEAD=k, V_HEAD=v)
        return dict(MODE=self.mode, K_ZEROS=k, V_ZEROS=v)


def dequantization(
    kt: DType,
    shape: tuple[int, ...],
    k_scale: Any,
    v_scale: Any,
    k_zero: Any,
    v_zero: Any,
    like: Any,
) -> Dequantization:
    """What the split kernel reads to dequantize a cache of `kt` (the arguments checked)."""
    if kt in (dtypes.u8, dtypes.u4):
        return Dequantization(
            TOKEN_SCALED,
            ks=_token_params(k_scale, "k_scale", shape[:3], True),
            kz=_token_params(k_zero, "k_zero", shape[:3], False),
            vs=_token_params(v_scale, "v_scale", shape[:3], True),
            vz=_token_params(v_zero, "v_zero", shape[:3], False),
        )
    for value, name in ((k_zero, "k_zero"), (v_zero, "v_zero")):
        if value is not None:
            raise ValueError(f"{name} is for u8/u4 caches only; the cache holds {kt}")
    if kt in FLOAT8:
        return _head_scaled(kt, shape[2], k_scale, v_scale, like)
    _unit_scale(k_scale, "k_scale", kt, shape[2])
    _unit_scale(v_scale, "v_scale", kt, shape[2])
    return Dequantization(PLAIN)


def _head_scaled(kt: DType, kv_heads: int, k_scale: Any, v_scale: Any, like: Any):
    """An f8 cache's `Dequantization`: scales given as numbers fold into the scalars."""
    ks = _head_scale(k_scale, "k_scale", kt, kv_heads, like)
    vs = _head_scale(v_scale, "v_scale", kt, kv_heads, like)
    k_number, v_number = isinstance(ks, np.float32), isinstance(vs, np.float32)
    if not (k_number or v_number) and shape_of(ks, "k_scale") != shape_of(vs, "v_scale"):
        raise ValueError(
            f"k_scale and v_scale must both hold one scale or both one per KV head "
            f"([{kv_heads}]), got {shape_of(ks, 'k_scale')[1]} and "
            f"{shape_of(vs, 'v_scale')[1]} (one of them may be a number)"
        )
    return Dequantization(
        HEAD_SCALED,
        ks=None if k_number else ks,
        vs=None if v_number else vs,
        k_factor=float(ks) if k_number else 1.0,
        v_factor=float(vs) if v_number else 1.0,
    )


def page_stride(
    x: Any, name: str, shape: tuple[int, ...], itemsize: int, pages: str | None = None
) -> int:
    """The rows ([H_kv, D] each) from one page of cache view x [num_blocks, block_size,
    H_kv, D] to the next: block_size when dense; more for the K or V half of
    FlashInfer's [num_blocks, 2, block_size, H_kv, D]. A ValueError when the pages are
    not each contiguous (`pages` names them in it: "x's pages" by default), or lie a
    fraction of a row apart, or overlap."""
    blocks, bs, kv_heads, d = shape
    _, strides = address_and_strides(x, itemsize)
    if strides is None:
        return bs
    inner = gpu.contiguous_strides((bs, kv_heads, d), itemsize)
    if any(n > 1 and s != e for n, s, e in zip(shape[1:], strides[1:], inner, strict=True)):
        subject = pages or f"{name}'s pages"
        raise ValueError(
            f"{subject} [block_size, H_kv, D] = "
            f"{list(shape[1:])} must be contiguous: element strides [..., "
            f"{bs and kv_heads * d}, {d}, 1] expected after the first, got "
            f"{[s // itemsize for s in strides]}"
        )
    row = kv_heads * d * itemsize
    if blocks <= 1 or row == 0:
        return bs
    if strides[0] % row or strides[0] < bs * row:
        raise ValueError(
            f"{name}'s pages must lie a whole number of rows [H_kv, D] ({row // itemsize} "
            f"elements) apart and not overlap (at least block_size = {bs} rows), got a page "
            f"stride of {strides[0] // itemsize} elements"
        )
    return strides[0] // row


def cache_spans(
    k_cache: Any, v_cache: Any, shape: tuple[int, ...], itemsize: int, apart: bool
) -> tuple[Any, Any, int]:
    """(k rows, v rows, rows from one page to the next) of the caches [num_blocks,
    block_size, H_kv, D] as a reading kernel takes them, [rows, H_kv, D]. Dense caches
    are one reshape each (block_size rows a page). Caches whose pages lie apart alike
    (the K and V halves of FlashInfer's [num_blocks, 2, block_size, H_kv, D]), where
    `apart` allows it, are the spans of their memory from page 0 to their last page
    (`common.span_of`): views, where a reshape would copy each whole cache every call.
    Any other layout is reshaped, which copies it (a PackedArray is dense)."""
    blocks, bs, kv_heads, d = shape
    dense = (blocks * bs, kv_heads, d)
    named = ((k_cache, "k_cache"), (v_cache, "v_cache"))
    if not any(isinstance(c, PackedArray) for c in (k_cache, v_cache)):
        try:
            strides = {page_stride(c, n, shape, itemsize) for c, n in named}
        except ValueError:
            strides = set()
        if apart and len(strides) == 1 and strides != {bs}:
            (page,) = strides
            rows = ((blocks - 1) * page + bs, kv_heads, d)
            return *(span_of(c, n, rows, itemsize) for c, n in named), page
    return *(_dense(c, n, dense) for c, n in named), bs


def _dense(x: Any, name: str, shape: tuple[int, ...]) -> Any:
    if isinstance(x, PackedArray):
        return PackedArray(x.data, x.dtype, shape)
    return reshaped(x, shape, name)

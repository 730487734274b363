"""`tilelang.kernels`' shape errors name every dimension they expect: an argument of the
wrong rank, or a wrong size beside a free one, reads "x must have shape [batch, Dm, L]"
(or "[8, W]" beside a size from another argument), never "[?, ?, ?]". The attention
functions' messages are tested in test_attention.py and test_paged_attention.py."""

import re

import numpy as np
import pytest

from tilelang.kernels import (
    causal_conv1d,
    causal_conv1d_update,
    rms_norm,
    selective_scan,
    selective_state_update,
    silu_and_mul,
    ssd_chunk_scan,
)

F16 = np.float16
F32 = np.float32


def zeros(*shape, dtype=F16):
    return np.zeros(shape, dtype)


CASES = [
    (
        lambda: causal_conv1d(zeros(2, 8), zeros(8, 4, dtype=F32)),
        "x must have shape [batch, Dm, L], got shape [2, 8]",
    ),
    (
        lambda: causal_conv1d(zeros(2, 8, 5), zeros(8, dtype=F32)),
        "weight must have shape [8, W], got shape [8] (Dm = 8 from x.shape[1])",
    ),
    (
        lambda: causal_conv1d_update(zeros(2), zeros(2, 8, 3), zeros(8, 4, dtype=F32)),
        "x must have shape [batch, Dm, S], got shape [2]",
    ),
    (
        lambda: causal_conv1d_update(zeros(2, 8), zeros(2, 8), zeros(8, 4, dtype=F32)),
        "conv_state must have shape [2, 8, state_len], got shape [2, 8] "
        "(batch = 2 from x.shape[0], Dm = 8 from x.shape[1])",
    ),
    (
        lambda: ssd_chunk_scan(
            zeros(1, 8, 4),
            zeros(1, 8, 4),
            zeros(4, dtype=F32),
            zeros(1, 8, 2, 8),
            zeros(1, 8, 2, 8),
            16,
        ),
        "x must have shape [batch, L, H, P], got shape [1, 8, 4]",
    ),
    (
        lambda: ssd_chunk_scan(
            zeros(1, 8, 4, 4),
            zeros(1, 8, 4),
            zeros(4, dtype=F32),
            zeros(1, 8, 2),
            zeros(1, 8, 2, 8),
            16,
        ),
        "B must have shape [1, 8, G, N], got shape [1, 8, 2] "
        "(batch = 1 from x.shape[0], L = 8 from x.shape[1])",
    ),
    (
        lambda: selective_scan(
            zeros(2, 8), zeros(2, 8), zeros(8, 4, dtype=F32), zeros(2, 4), zeros(2, 4)
        ),
        "u must have shape [batch, Dm, L], got shape [2, 8]",
    ),
    (
        lambda: selective_state_update(
            zeros(2, 8), zeros(2, 8), zeros(2, 8), zeros(8, 4, dtype=F32), zeros(2, 4), zeros(2, 4)
        ),
        "state must have shape [batch, Dm, N], got shape [2, 8]",
    ),
    (lambda: rms_norm(zeros(), zeros(1)), "x must have shape [..., H], got shape []"),
    (
        lambda: rms_norm(zeros(3, 6), zeros(5)),
        "weight must have shape [6], got shape [5] (6 from x.shape[1])",
    ),
    (lambda: silu_and_mul(zeros()), "x must have shape [..., 2·d], got shape []"),
]


@pytest.mark.parametrize(
    "call, message", CASES, ids=[m.split(" must")[0] + str(i) for i, (_, m) in enumerate(CASES)]
)
def test_a_shape_error_names_each_dimension_it_expects(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()

"""Per-step fused kernels: the fallback for hidden sizes the persistent kernels cannot hold.

Each time step is three launches (the three dependent products of one step), each a tiled
GEMM with its elementwise epilogue fused; grid ``(cdiv(B, BLOCK_M), cdiv(d, BLOCK_N))``, a
program owns an output tile ``[BLOCK_M rows, BLOCK_N hidden units]`` and loops over K.

Forward, step t (gates: ``[B, 4d]`` ACC_DT, u | s | z | r; ``saved[t]`` when training, else a
workspace reused every step; h32: ``[B, d]`` ACC_DT state)::

    fwd_gates: P = xp_t + h_{t-1} W_hh^T -> u, s, r (gates), o = u*s (o_buf, input dtype)
    fwd_int:   z = tanh(o W_int^T + b_int) (gates), q = z*r (q_buf, input dtype)
    fwd_out:   h_t = where(live, tanh(q W_out^T + b_out + h32), h32) -> h32, hs[t]

Backward, step t (dh32: ``[B, d]`` ACC_DT, dL/dh_t carried between launches)::

    bwd_dq: dq = d_yp[t] @ W_out -> dzp (d_zp[t]), dr (d_p[t][:, 2d:])
    bwd_do: do = d_zp[t] @ W_int -> da, ds (d_p[t][:, :2d])
    bwd_dh: dh = where(live_t, d_yp[t] + d_p[t] @ W_hh, dh32); then for step t-1:
            dh += grad_hs[t-1], d_yp[t-1] = dh (1 - hs[t-1]^2) (or d_h0 = dh after step 0)

``bwd_dh`` with HAS_DOT=False is the prologue that starts the recursion at t = T-1.
Masked rows (t >= len) write zero gates / gradients and keep their state / dh.
"""

import triton
import triton.language as tl

from ._math import device_fn, rn, sigmoid, tanh
from .tiles import load_block, mm_chunked, store_block


@device_fn
def _tile(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, B, D, len_ptr, t, HAS_LENGTHS: tl.constexpr):
    """This program's rows, hidden units (n), their masks and the live-row mask of step t."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < B
    if HAS_LENGTHS:
        live = (t < tl.load(len_ptr + rows, mask=row_ok, other=0))[:, None]
    else:
        live = (rows >= 0)[:, None]
    return rows, n, row_ok, n < D, live


@triton.jit(do_not_specialize=["t", "B"])
def diru_fwd_step_gates(
    xp_t_ptr,  # [B, 3d] input dtype
    h_prev_ptr,  # [B, d] input dtype (h0, or hs[t-1])
    w_hh_ptr,  # [3d, d]
    len_ptr,  # [B] int64
    gates_ptr,  # [B, 4d] out, ACC_DT: u, s, r written here (z by fwd_int)
    o_ptr,  # [B, d] out, input dtype: o = u*s
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    kr = tl.arange(0, BLOCK_K)
    r3 = rows * (3 * D)
    a = load_block(xp_t_ptr, r3, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
    s_pre = load_block(xp_t_ptr + D, r3, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
    r_pre = load_block(xp_t_ptr + 2 * D, r3, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
    a = mm_chunked(a, h_prev_ptr, rows * D, row_ok, w_hh_ptr, kr, n * D, 1, n_ok, D,
                   BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    s_pre = mm_chunked(s_pre, h_prev_ptr, rows * D, row_ok, w_hh_ptr + D * D, kr, n * D, 1, n_ok, D,
                       BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    r_pre = mm_chunked(r_pre, h_prev_ptr, rows * D, row_ok, w_hh_ptr + 2 * D * D, kr, n * D, 1, n_ok, D,
                       BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    u = tl.where(live, tanh(a), 0.0)
    s = tl.where(live, sigmoid(s_pre), 0.0)
    r = tl.where(live, sigmoid(r_pre), 0.0)
    r4 = rows * (4 * D)
    store_block(gates_ptr, r4, n, u, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(gates_ptr + D, r4, n, s, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(gates_ptr + 3 * D, r4, n, r, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(o_ptr, rows * D, n, rn(u * s, IN_DT), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_fwd_step_int(
    o_ptr,  # [B, d] input dtype
    w_int_ptr,  # [d, d]
    b_int_ptr,  # [d]
    len_ptr,  # [B] int64
    gates_ptr,  # [B, 4d] ACC_DT: reads r, writes z
    q_ptr,  # [B, d] out, input dtype: q = z*r
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    zp = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT) + tl.load(b_int_ptr + n, mask=n_ok, other=0.0).to(ACC_DT)[None, :]
    zp = mm_chunked(zp, o_ptr, rows * D, row_ok, w_int_ptr, tl.arange(0, BLOCK_K), n * D, 1, n_ok, D,
                    BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    z = tl.where(live, tanh(zp), 0.0)
    r4 = rows * (4 * D)
    r = load_block(gates_ptr + 3 * D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(gates_ptr + 2 * D, r4, n, z, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(q_ptr, rows * D, n, rn(z * r, IN_DT), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_fwd_step_out(
    q_ptr,  # [B, d] input dtype
    w_out_ptr,  # [d, d]
    b_out_ptr,  # [d]
    len_ptr,  # [B] int64
    h32_ptr,  # [B, d] ACC_DT state: read h_{t-1}, write h_t (each program its own tile)
    hs_t_ptr,  # [B, d] out, input dtype
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    r1 = rows * D
    h = load_block(h32_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D)
    y = h + tl.load(b_out_ptr + n, mask=n_ok, other=0.0).to(ACC_DT)[None, :]
    y = mm_chunked(y, q_ptr, r1, row_ok, w_out_ptr, tl.arange(0, BLOCK_K), n * D, 1, n_ok, D,
                   BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    h = tl.where(live, tanh(y), h)
    store_block(h32_ptr, r1, n, h, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(hs_t_ptr, r1, n, rn(h, hs_t_ptr.dtype.element_ty), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_bwd_step_dq(
    d_yp_t_ptr,  # [B, d] ACC_DT
    saved_t_ptr,  # [B, 4d] ACC_DT
    w_out_ptr,  # [d, d]
    len_ptr,  # [B] int64
    d_zp_t_ptr,  # [B, d] out, ACC_DT
    d_p_t_ptr,  # [B, 3d] out, ACC_DT: dr written here
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    dq = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT)
    dq = mm_chunked(dq, d_yp_t_ptr, rows * D, row_ok, w_out_ptr, tl.arange(0, BLOCK_K) * D, n, D, n_ok, D,
                    BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    r4 = rows * (4 * D)
    z = load_block(saved_t_ptr + 2 * D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    r = load_block(saved_t_ptr + 3 * D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(d_zp_t_ptr, rows * D, n, tl.where(live, dq * r * (1.0 - z * z), 0.0), row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(d_p_t_ptr + 2 * D, rows * (3 * D), n, tl.where(live, dq * z * r * (1.0 - r), 0.0),
                row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_bwd_step_do(
    d_zp_t_ptr,  # [B, d] ACC_DT
    saved_t_ptr,  # [B, 4d] ACC_DT
    w_int_ptr,  # [d, d]
    len_ptr,  # [B] int64
    d_p_t_ptr,  # [B, 3d] out, ACC_DT: da, ds written here
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    do = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT)
    do = mm_chunked(do, d_zp_t_ptr, rows * D, row_ok, w_int_ptr, tl.arange(0, BLOCK_K) * D, n, D, n_ok, D,
                    BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    r4 = rows * (4 * D)
    u = load_block(saved_t_ptr, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    s = load_block(saved_t_ptr + D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    r3 = rows * (3 * D)
    store_block(d_p_t_ptr, r3, n, tl.where(live, do * s * (1.0 - u * u), 0.0), row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(d_p_t_ptr + D, r3, n, tl.where(live, do * u * s * (1.0 - s), 0.0), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_bwd_step_dh(
    d_yp_t_ptr,  # [B, d] ACC_DT (step t; unused if not HAS_DOT)
    d_p_t_ptr,  # [B, 3d] ACC_DT (step t; unused if not HAS_DOT)
    w_hh_ptr,  # [3d, d]
    len_ptr,  # [B] int64
    dh32_ptr,  # [B, d] ACC_DT: dL/dh carried between steps (each program its own tile)
    grad_prev_ptr,  # [B, d] input dtype: grad_hs[t-1] (unused if FINAL)
    hs_prev_ptr,  # [B, d] input dtype: hs[t-1] (unused if FINAL)
    d_yp_prev_ptr,  # [B, d] out, ACC_DT: d_yp[t-1] (unused if FINAL)
    d_h0_ptr,  # [B, d] out, dtype of h0 (written only if FINAL)
    t, B, D,
    HAS_DOT: tl.constexpr, FINAL: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    r1 = rows * D
    if HAS_DOT:  # dh_{t-1} = where(live_t, dyp_t + dP_t @ W_hh, dh_t)
        dh = load_block(d_yp_t_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D)
        for g in tl.static_range(3):
            dh = mm_chunked(dh, d_p_t_ptr + g * D, rows * (3 * D), row_ok, w_hh_ptr + g * D * D,
                            tl.arange(0, BLOCK_K) * D, n, D, n_ok, D,
                            BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
        dh = tl.where(live, dh, load_block(dh32_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D))
    else:  # prologue: nothing flows back from beyond the last step
        dh = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT)
    if FINAL:
        store_block(d_h0_ptr, r1, n, rn(dh, d_h0_ptr.dtype.element_ty), row_ok, n_ok, EVEN_B, EVEN_D)
    else:
        dh += load_block(grad_prev_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
        h_new = load_block(hs_prev_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
        dyp = dh * (1.0 - h_new * h_new)
        if HAS_LENGTHS:
            live_prev = (t - 1 < tl.load(len_ptr + rows, mask=row_ok, other=0))[:, None]
            dyp = tl.where(live_prev, dyp, 0.0)
        store_block(d_yp_prev_ptr, r1, n, dyp, row_ok, n_ok, EVEN_B, EVEN_D)
        store_block(dh32_ptr, r1, n, dh, row_ok, n_ok, EVEN_B, EVEN_D)

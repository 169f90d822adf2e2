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

Options (constexpr flags as in the persistent kernels; docs/THEORY.md §1.2–1.6): RELU in
fwd_gates / bwd_do; HAS_MASK multiplies o (fwd_gates) and do (bwd_do) by ``mask[t]``; HAS_DECAY
(time decay, ``hd = decay[t] * h_{t-1}``): fwd_out adds hd to its residual (masked rows keep the
undecayed h32) and writes the next step's operand ``rn(h_t * decay[t+1])`` to the buffer fwd_gates
reads as its h (the launcher forms the first one, ``rn(h0 * decay[0])``), so fwd_gates itself is the
plain kernel; bwd_dh carries ``decay[t] * (d_yp[t] + d_p[t] @ W_hh)`` on live rows; NK > 0
(attention): xp / d_p rows are 3d+NK wide and saved rows 4d+NK. fwd_gates computes the logits
``e [BLOCK_M, K_PAD]`` of its rows (every column-tile program the same, K = d) and alpha =
softmax(e) (stored by the programs of column tile 0), and scales its units by NK * alpha[c(j)]
(``_math.spread``). In the backward bwd_do writes ``v = do*u*s`` ([B, d] workspace) next to da,
ds; one more launch per step, ``bwd_att`` (grid ``(cdiv(B, BLOCK_M),)``), sums v per compartment
and writes ``de`` to ``d_p[t][:, 3d:]``; bwd_dh adds ``de @ W_hh[3d:]`` to dh.
Masked rows (t >= len) write zero gates / gradients and keep their state / dh.

Formed in the step (as the persistent kernels): MASK_HASH, the dropout mask from its seed (fwd_gates,
bwd_do; ``mask_t_ptr`` then points at the kept value); DECAY_RATE, the factors ``exp(-rate * dt[t])``
(fwd_out, bwd_dh; ``decay_*_ptr`` then point at the rates ``[d]``, ``dt_*_ptr`` at the step's gaps
``[B]``), and bwd_dh writes the decayed state ``hd[t] = decay[t] * h_{t-1}`` and the gradient parts of
the rates (``[cdiv(B, BLOCK_M), d]``, accumulated over the steps) and of the gaps (``[B, cdiv(d,
BLOCK_N)]`` per step), which the launcher sums. WANT_O: bwd_do writes the integration inputs ``o =
u s (* NK alpha_c) (* mask)``.
"""

import triton
import triton.language as tl

from ._math import decay_factors, device_fn, dropout_mask, rn, segment_sums, sigmoid, softmax_rows, spread, tanh
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


@device_fn
def _mask(mask_t_ptr, rows, n, row_ok, n_ok, t, B, D, seed_lo, seed_hi, threshold, EVEN_B: tl.constexpr,
          EVEN_D: tl.constexpr, MASK_HASH: tl.constexpr):
    """The dropout mask of step t on this tile: ``mask[t]`` ``[B, d]``, or formed from its seed (MASK_HASH)."""
    if MASK_HASH:
        return dropout_mask(rows, n, t, B, seed_lo, seed_hi, threshold, tl.load(mask_t_ptr))
    return load_block(mask_t_ptr, rows * D, n, row_ok, n_ok, EVEN_B, EVEN_D)


@device_fn
def _decay(decay_ptr, dt_ptr, rows, n, row_ok, n_ok, D, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
           DECAY_RATE: tl.constexpr):
    """The decay factors of one step on this tile: ``decay[t]`` ``[B, d]``, or ``exp(-rate * dt[t])``."""
    if DECAY_RATE:
        return decay_factors(decay_ptr, dt_ptr, rows, n, row_ok, n_ok)
    return load_block(decay_ptr, rows * D, n, row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B", "seed_lo", "seed_hi", "threshold"])
def diru_fwd_step_gates(
    xp_t_ptr,  # [B, 3d+NK] input dtype
    h_prev_ptr,  # [B, d] input dtype: h0, or hs[t-1] (time decay: the decayed operand fwd_out wrote)
    w_hh_ptr,  # [3d+NK, d]
    len_ptr,  # [B] int64
    gates_ptr,  # [B, 4d+NK] out, ACC_DT: u, s, r (and alpha) written here (z by fwd_int)
    o_ptr,  # [B, d] out, input dtype: o = u*s (* NK alpha_c) (* mask_t)
    comp_ptr,  # [d] int32 (read only if NK > 0)
    mask_t_ptr,  # [B, d] ACC_DT (read only if HAS_MASK); MASK_HASH: [1] the kept value
    t, B, D,
    seed_lo, seed_hi, threshold,  # int32 bits of the dropout seed's halves and threshold (MASK_HASH)
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    RELU: tl.constexpr, NK: tl.constexpr, K_PAD: tl.constexpr, HAS_MASK: tl.constexpr, MASK_HASH: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    kr = tl.arange(0, BLOCK_K)
    r3 = rows * (3 * D + NK)
    a = load_block(xp_t_ptr, r3, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
    s_pre = load_block(xp_t_ptr + D, r3, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
    r_pre = load_block(xp_t_ptr + 2 * D, r3, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
    a = mm_chunked(a, h_prev_ptr, rows * D, row_ok, w_hh_ptr, kr, n * D, 1, n_ok, D,
                   BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    s_pre = mm_chunked(s_pre, h_prev_ptr, rows * D, row_ok, w_hh_ptr + D * D, kr, n * D, 1, n_ok, D,
                       BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    r_pre = mm_chunked(r_pre, h_prev_ptr, rows * D, row_ok, w_hh_ptr + 2 * D * D, kr, n * D, 1, n_ok, D,
                       BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    if RELU:
        u = tl.where(live, tl.maximum(a, 0.0), 0.0)
    else:
        u = tl.where(live, tanh(a), 0.0)
    s = tl.where(live, sigmoid(s_pre), 0.0)
    r = tl.where(live, sigmoid(r_pre), 0.0)
    r4 = rows * (4 * D + NK)
    store_block(gates_ptr, r4, n, u, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(gates_ptr + D, r4, n, s, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(gates_ptr + 3 * D, r4, n, r, row_ok, n_ok, EVEN_B, EVEN_D)
    o = u * s
    if NK > 0:
        kc = tl.arange(0, K_PAD)
        kc_ok = kc < NK
        e = load_block(xp_t_ptr + 3 * D, r3, kc, row_ok, kc_ok, EVEN_B, False).to(ACC_DT)  # [BLOCK_M, K_PAD]
        e = mm_chunked(e, h_prev_ptr, rows * D, row_ok, w_hh_ptr + 3 * D * D, kr, kc * D, 1, kc_ok, D,
                       BLOCK_K, EVEN_B, EVEN_D, False, IN_DT, OP_DT, PRECISION)
        alpha = tl.where(live, softmax_rows(e, kc_ok), 0.0)
        first = kc < NK * (1 - tl.minimum(tl.program_id(1), 1))  # kc_ok in column tile 0, else nothing
        store_block(gates_ptr + 4 * D, r4, kc, alpha, row_ok, first, EVEN_B, False)
        comp = tl.load(comp_ptr + n, mask=n_ok, other=-1)
        o = o * (NK * spread(alpha, comp))
    if HAS_MASK:
        o = o * _mask(mask_t_ptr, rows, n, row_ok, n_ok, t, B, D, seed_lo, seed_hi, threshold, EVEN_B, EVEN_D,
                      MASK_HASH)
    store_block(o_ptr, rows * D, n, rn(o, IN_DT), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_fwd_step_int(
    o_ptr,  # [B, d] input dtype
    w_int_ptr,  # [d, d]
    b_int_ptr,  # [d]
    len_ptr,  # [B] int64
    gates_ptr,  # [B, 4d+NK] ACC_DT: reads r, writes z
    q_ptr,  # [B, d] out, input dtype: q = z*r
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr, NK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    zp = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT) + tl.load(b_int_ptr + n, mask=n_ok, other=0.0).to(ACC_DT)[None, :]
    zp = mm_chunked(zp, o_ptr, rows * D, row_ok, w_int_ptr, tl.arange(0, BLOCK_K), n * D, 1, n_ok, D,
                    BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    z = tl.where(live, tanh(zp), 0.0)
    r4 = rows * (4 * D + NK)
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
    decay_t_ptr,  # [B, d] ACC_DT: decay[t] (read only if HAS_DECAY); DECAY_RATE: [d] the rates
    decay_next_ptr,  # [B, d] ACC_DT: decay[t+1] (read only if HAS_DECAY); DECAY_RATE: [d] the rates
    hd_next_ptr,  # [B, d] out, input dtype: the next step's h operand rn(h_t * decay[t+1]) (if HAS_DECAY)
    dt_t_ptr,  # [B] ACC_DT: dt[t] (read only if DECAY_RATE)
    dt_next_ptr,  # [B] ACC_DT: dt[t+1] (read only if DECAY_RATE)
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr, HAS_DECAY: tl.constexpr,
    DECAY_RATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    r1 = rows * D
    h = load_block(h32_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D)
    if HAS_DECAY:  # the residual adds hd = decay[t] * h_{t-1}; masked rows keep h_{t-1} itself
        y = h * _decay(decay_t_ptr, dt_t_ptr, rows, n, row_ok, n_ok, D, EVEN_B, EVEN_D, DECAY_RATE)
    else:
        y = h
    y = y + tl.load(b_out_ptr + n, mask=n_ok, other=0.0).to(ACC_DT)[None, :]
    y = mm_chunked(y, q_ptr, r1, row_ok, w_out_ptr, tl.arange(0, BLOCK_K), n * D, 1, n_ok, D,
                   BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    h = tl.where(live, tanh(y), h)
    store_block(h32_ptr, r1, n, h, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(hs_t_ptr, r1, n, rn(h, hs_t_ptr.dtype.element_ty), row_ok, n_ok, EVEN_B, EVEN_D)
    if HAS_DECAY:
        hd = h * _decay(decay_next_ptr, dt_next_ptr, rows, n, row_ok, n_ok, D, EVEN_B, EVEN_D, DECAY_RATE)
        store_block(hd_next_ptr, r1, n, rn(hd, IN_DT), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_bwd_step_dq(
    d_yp_t_ptr,  # [B, d] ACC_DT
    saved_t_ptr,  # [B, 4d+NK] ACC_DT
    w_out_ptr,  # [d, d]
    len_ptr,  # [B] int64
    d_zp_t_ptr,  # [B, d] out, ACC_DT
    d_p_t_ptr,  # [B, 3d+NK] out, ACC_DT: dr written here
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr, NK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    dq = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT)
    dq = mm_chunked(dq, d_yp_t_ptr, rows * D, row_ok, w_out_ptr, tl.arange(0, BLOCK_K) * D, n, D, n_ok, D,
                    BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    r4 = rows * (4 * D + NK)
    z = load_block(saved_t_ptr + 2 * D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    r = load_block(saved_t_ptr + 3 * D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(d_zp_t_ptr, rows * D, n, tl.where(live, dq * r * (1.0 - z * z), 0.0), row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(d_p_t_ptr + 2 * D, rows * (3 * D + NK), n, tl.where(live, dq * z * r * (1.0 - r), 0.0),
                row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B", "seed_lo", "seed_hi", "threshold"])
def diru_bwd_step_do(
    d_zp_t_ptr,  # [B, d] ACC_DT
    saved_t_ptr,  # [B, 4d+NK] ACC_DT
    w_int_ptr,  # [d, d]
    len_ptr,  # [B] int64
    d_p_t_ptr,  # [B, 3d+NK] out, ACC_DT: da, ds written here
    comp_ptr,  # [d] int32 (read only if NK > 0)
    mask_t_ptr,  # [B, d] ACC_DT (read only if HAS_MASK); MASK_HASH: [1] the kept value
    v_ptr,  # [B, d] out, ACC_DT: v = do*u*s for bwd_att (written only if NK > 0)
    o_t_ptr,  # [B, d] out, ACC_DT: o[t] = u s (* NK alpha_c) (* mask) (written only if WANT_O)
    t, B, D,
    seed_lo, seed_hi, threshold,  # int32 bits of the dropout seed's halves and threshold (MASK_HASH)
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    RELU: tl.constexpr, NK: tl.constexpr, K_PAD: tl.constexpr, HAS_MASK: tl.constexpr, MASK_HASH: tl.constexpr,
    WANT_O: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    do = tl.zeros([BLOCK_M, BLOCK_N], ACC_DT)
    do = mm_chunked(do, d_zp_t_ptr, rows * D, row_ok, w_int_ptr, tl.arange(0, BLOCK_K) * D, n, D, n_ok, D,
                    BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
    r4 = rows * (4 * D + NK)
    u = load_block(saved_t_ptr, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    s = load_block(saved_t_ptr + D, r4, n, row_ok, n_ok, EVEN_B, EVEN_D)
    if HAS_MASK:
        m = _mask(mask_t_ptr, rows, n, row_ok, n_ok, t, B, D, seed_lo, seed_hi, threshold, EVEN_B, EVEN_D, MASK_HASH)
        do = do * m
    if NK > 0:
        kc = tl.arange(0, K_PAD)
        alpha = load_block(saved_t_ptr + 4 * D, r4, kc, row_ok, kc < NK, EVEN_B, False)  # [BLOCK_M, K_PAD]
        store_block(v_ptr, rows * D, n, tl.where(live, do * u * s, 0.0), row_ok, n_ok, EVEN_B, EVEN_D)
        comp = tl.load(comp_ptr + n, mask=n_ok, other=-1)
        g = NK * spread(alpha, comp)
        do = do * g
    if WANT_O:  # the contract's order: u s, then the attention scale, then the mask
        o = u * s
        if NK > 0:
            o = o * g
        if HAS_MASK:
            o = o * m
        store_block(o_t_ptr, rows * D, n, o, row_ok, n_ok, EVEN_B, EVEN_D)
    r3 = rows * (3 * D + NK)
    if RELU:
        da = tl.where(u > 0.0, do * s, 0.0)
    else:
        da = do * s * (1.0 - u * u)
    store_block(d_p_t_ptr, r3, n, tl.where(live, da, 0.0), row_ok, n_ok, EVEN_B, EVEN_D)
    store_block(d_p_t_ptr + D, r3, n, tl.where(live, do * u * s * (1.0 - s), 0.0), row_ok, n_ok, EVEN_B, EVEN_D)


@triton.jit(do_not_specialize=["t", "B"])
def diru_bwd_step_dh(
    d_yp_t_ptr,  # [B, d] ACC_DT (step t; unused if not HAS_DOT)
    d_p_t_ptr,  # [B, 3d+NK] ACC_DT (step t; unused if not HAS_DOT)
    w_hh_ptr,  # [3d+NK, d]
    len_ptr,  # [B] int64
    dh32_ptr,  # [B, d] ACC_DT: dL/dh carried between steps (each program its own tile)
    grad_prev_ptr,  # [B, d] input dtype: grad_hs[t-1] (unused if FINAL)
    hs_prev_ptr,  # [B, d] input dtype: hs[t-1] (unused if FINAL)
    d_yp_prev_ptr,  # [B, d] out, ACC_DT: d_yp[t-1] (unused if FINAL)
    d_h0_ptr,  # [B, d] out, dtype of h0 (written only if FINAL)
    decay_t_ptr,  # [B, d] ACC_DT: decay[t] (read only if HAS_DOT and HAS_DECAY); DECAY_RATE: [d] the rates
    dt_t_ptr,  # [B] ACC_DT: dt[t] (DECAY_RATE)
    h_before_ptr,  # [B, d] input dtype: h_{t-1}, i.e. hs[t-1] or h0 (DECAY_RATE)
    hd_t_ptr,  # [B, d] out, ACC_DT: hd[t] = decay[t] h_{t-1} (DECAY_RATE)
    d_rate_ptr,  # [cdiv(B, BLOCK_M), d] ACC_DT: dL/drate of each row tile, accumulated (DECAY_RATE)
    d_dt_t_ptr,  # [B, cdiv(d, BLOCK_N)] out, ACC_DT: dL/ddt[t] of each column tile (DECAY_RATE)
    t, B, D,
    HAS_DOT: tl.constexpr, FINAL: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr, NK: tl.constexpr,
    HAS_DECAY: tl.constexpr, DECAY_RATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    rows, n, row_ok, n_ok, live = _tile(BLOCK_M, BLOCK_N, B, D, len_ptr, t, HAS_LENGTHS)
    r1 = rows * D
    if HAS_DOT:  # dh_{t-1} = where(live_t, dyp_t + dP_t @ W_hh, dh_t)   (times decay[t] with HAS_DECAY)
        dh = load_block(d_yp_t_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D)
        for g in tl.static_range(3):
            dh = mm_chunked(dh, d_p_t_ptr + g * D, rows * (3 * D + NK), row_ok, w_hh_ptr + g * D * D,
                            tl.arange(0, BLOCK_K) * D, n, D, n_ok, D,
                            BLOCK_K, EVEN_B, EVEN_D, EVEN_D, IN_DT, OP_DT, PRECISION)
        if NK > 0:  # the attention rows: de @ W_hh[3d:], K = NK
            dh = mm_chunked(dh, d_p_t_ptr + 3 * D, rows * (3 * D + NK), row_ok, w_hh_ptr + 3 * D * D,
                            tl.arange(0, BLOCK_K) * D, n, D, n_ok, NK,
                            BLOCK_K, EVEN_B, False, False, IN_DT, OP_DT, PRECISION)
        if HAS_DECAY:
            dec = _decay(decay_t_ptr, dt_t_ptr, rows, n, row_ok, n_ok, D, EVEN_B, EVEN_D, DECAY_RATE)
            if DECAY_RATE:  # the decayed state, the gradient parts of the rates and the gaps
                hd = dec * load_block(h_before_ptr, r1, n, row_ok, n_ok, EVEN_B, EVEN_D).to(ACC_DT)
                store_block(hd_t_ptr, r1, n, hd, row_ok, n_ok, EVEN_B, EVEN_D)
                g = tl.where(live, dh * hd, 0.0)  # dL/d(-rate dt)
                dt = tl.load(dt_t_ptr + rows, mask=row_ok, other=0.0)
                rate = tl.load(decay_t_ptr + n, mask=n_ok, other=0.0)
                part = d_rate_ptr + tl.program_id(0) * D + n
                tl.store(part, tl.load(part, mask=n_ok, other=0.0) + tl.sum(g * -dt[:, None], axis=0), mask=n_ok)
                tl.store(d_dt_t_ptr + rows * tl.num_programs(1) + tl.program_id(1), -tl.sum(g * rate[None, :], axis=1),
                         mask=row_ok)
            dh = dh * dec
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


@triton.jit(do_not_specialize=["t", "B"])
def diru_bwd_step_att(
    v_ptr,  # [B, d] ACC_DT: do*u*s of step t (bwd_do)
    saved_t_ptr,  # [B, 4d+NK] ACC_DT: alpha in the last NK columns
    comp_ptr,  # [d] int32
    len_ptr,  # [B] int64
    d_p_t_ptr,  # [B, 3d+NK] out, ACC_DT: de written to the last NK columns
    t, B, D,
    HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    NK: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DT: tl.constexpr,
):
    """dalpha = NK * (segment sums of v per compartment), de = softmax backward; grid (cdiv(B, BLOCK_M),)."""
    rows, _, row_ok, _, live = _tile(BLOCK_M, 16, B, D, len_ptr, t, HAS_LENGTHS)
    kc = tl.arange(0, K_PAD)
    kc_ok = kc < NK
    kr = tl.arange(0, BLOCK_K)
    d_alpha = tl.zeros([BLOCK_M, K_PAD], ACC_DT)
    for k0 in range(0, D, BLOCK_K):
        k_ok = (k0 + kr) < D
        v = load_block(v_ptr + k0, rows * D, kr, row_ok, k_ok, EVEN_B, EVEN_D)  # [BLOCK_M, BLOCK_K]
        d_alpha += segment_sums(v, tl.load(comp_ptr + k0 + kr, mask=k_ok, other=-1), kc)
    d_alpha = NK * d_alpha
    alpha = load_block(saved_t_ptr + 4 * D, rows * (4 * D + NK), kc, row_ok, kc_ok, EVEN_B, False)
    de = alpha * (d_alpha - tl.sum(alpha * d_alpha, axis=1)[:, None])
    store_block(d_p_t_ptr + 3 * D, rows * (3 * D + NK), kc, tl.where(live, de, 0.0), row_ok, kc_ok, EVEN_B, False)

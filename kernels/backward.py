"""Reverse-time backward kernel: one launch per layer and direction produces the per-step
pre-activation gradients (the weight gradients are GEMMs over all T*B rows afterwards,
in ``diru_fast.scan.ops``).

Grid ``(cdiv(B, BLOCK_B),)``: program i owns the same batch rows as in the forward and walks
t = T-1 .. 0 carrying ``dh [BLOCK_B, D_PAD]`` (dL/dh_t, ACC_DT) in registers. Per step, with
h' = hs[t] and the saved gates u, s, z, r of step t::

    dh   += grad_hs[t]
    dyp   = dh * (1 - h'^2)                         -> d_yp[t]
    dq    = dyp @ W_out
    dzp   = dq * r * (1 - z^2)                      -> d_zp[t]
    dr    = dq * z * r * (1 - r)                    -> d_p[t][:, 2d:]
    do    = dzp @ W_int
    da    = do * s * (1 - u^2), ds = do * u * s * (1 - s)   -> d_p[t][:, :2d]
    dh    = where(t < len, dyp + [da | ds | dr] @ W_hh, dh)  (masked: passes through)

Options (constexpr flags, as in the forward; docs/THEORY.md §1.2–1.6): HAS_MASK multiplies
``do`` by ``mask[t]``; RELU takes the slope ``[u > 0]`` instead of ``1 - u^2``; NK > 0 (attention)
reads alpha from ``saved[t][:, 4d:]`` and, with ``comp`` the int32 compartment of each unit::

    g      = NK * alpha[:, comp]                    (per-unit scale, [BLOCK_B, D_PAD]; _math.spread)
    dalpha = NK * segment sums of do * u * s        (per compartment; _math.segment_sums)
    de     = alpha * (dalpha - <alpha, dalpha>)     -> d_p[t][:, 3d:]
    do    *= g;   dh += de @ W_e                    (W_e = W_hh's attention rows, [K_PAD, D_PAD])

HAS_DECAY (time decay; the forward read ``hd = decay[t] * h``): what the step computes above is
dL/dhd; the state gradient carried to step t-1 is ``where(t < len, decay[t] * (dyp + dP @ W_hh), dh)``.

Formed in the step (as the forward): MASK_HASH, the dropout mask from its seed; DECAY_RATE, the factors
``decay[t] = exp(-rate * dt[t])`` from the rates ``[d]`` and gaps ``[T, B]``, and then the backward also
writes what the gradients of the rates, the gaps and W_hh need, so no ``[T*B, 3d+k] x [3d+k, d]`` product
runs afterwards (docs/THEORY.md §2.3)::

    hd[t]     = decay[t] * h_{t-1}                  -> hd[t]  (the rows of W_hh's gradient)
    g         = [t < len] dL/dhd * hd               (dL/ddecay * decay = dL/d(-rate dt))
    d_dt[t]   = -sum_j g * rate                     -> d_dt[t]
    d_rate   += sum_rows -g * dt[t]                 -> d_rate[t % 2, program]  (summed by the launcher)

formed at the top of step t-1 (``_decay_terms``), where ``h_{t-1} = hs[t-1]`` is loaded anyway and the
carried ``dh = decay[t] * dL/dhd`` gives ``g = dh * h_{t-1}`` with few tiles live (step 0's after the loop,
from h0).

The integration inputs ``o = u * s (* NK alpha_c) (* mask[t])`` (the rows of W_int's gradient, so the
caller forms no mask) come from ``diru_integration_inputs``, one elementwise launch after this kernel
(computed here they made the resident backward with attention spill).

Masked steps write zero gradients. Weights arrive zero-padded to the tile by the launcher
(as in the forward), so no weight load is masked. In the RESIDENT regime the weights are
loaded once and the operands come straight from registers. In the streamed regime the left
operands of the three products (dyp, dzp, [da | ds | dr], rounded to the storage dtype) are
written to a D_PAD-wide scratch row block and read back BLOCK_K columns at a time after a CTA
barrier; the scratch alternates between two buffers by step parity (no loop-invariant
address tensors, see ``tiles``).
"""

import triton
import triton.language as tl

from ._math import SELECT_MAX_K, device_fn, dropout_mask, operand, rn, segment_sums, spread
from .forward import step_decay, step_mask
from .tiles import load_block, mm_chunked, offsets, store_block


@device_fn
def _decay_terms(d_rate_ptr, dh, h_prev, t, rows, cols, row_ok, col_ok, r1, rate_ptr, dt_ptr, hd_ptr, d_dt_ptr, B,
                 D, length, HAS_LENGTHS: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
                 D_PAD: tl.constexpr):
    """Time decay from rates, step t's terms (DECAY_RATE), formed once the walk back has reached step t's
    state ``h_prev = h_{t-1}`` (hs[t-1], or h0 for t = 0) and carries ``dh = decay[t] * dL/dhd[t]`` (on the
    rows live at t; the others pass dh through and get no terms): ``hd[t] = decay[t] * h_{t-1}`` out,
    ``g = dL/dhd[t] * hd[t] = dh * h_{t-1}`` (dL/d(-rate dt)), ``d_dt[t] = -sum_j g * rate`` out, and
    ``sum_rows(-g * dt[t])`` added to this program's dL/drate row of parity t. Here, at the top of the next
    step, few tiles are live (at the end of step t the products' tiles still are: the resident d_pad = 64
    backward spilled there). The rates (two copies) and the dL/drate rows (two per program) are read by
    step parity: no loop-invariant address, nothing hoisted to hold registers across the loop."""
    parity = t % 2
    rate = tl.load(rate_ptr + parity * D + cols, mask=col_ok, other=0.0)  # [D_PAD]
    dt = tl.load(dt_ptr + (tl.cast(t, tl.int64) * B + rows), mask=row_ok, other=0.0)  # [BLOCK_B]
    step = tl.cast(t, tl.int64) * B * D
    store_block(hd_ptr + step, r1, cols, tl.exp(-rate[None, :] * dt[:, None]) * h_prev, row_ok, col_ok, EVEN_B,
                EVEN_D)
    g = dh * h_prev
    if HAS_LENGTHS:
        g = tl.where((t < length)[:, None], g, 0.0)
    tl.store(d_dt_ptr + (tl.cast(t, tl.int64) * B + rows), -tl.sum(g * rate[None, :], axis=1), mask=row_ok)
    part = d_rate_ptr + (parity * tl.num_programs(0) + tl.program_id(0)) * D_PAD + cols
    tl.store(part, tl.load(part) + tl.sum(g * -dt[:, None], axis=0))


# no recompiles per batch size / length / seed
@triton.jit(do_not_specialize=["T", "B", "seed_lo", "seed_hi", "threshold"])
def diru_bwd_persistent(
    grad_ptr,  # [T, B, d] dL/dh_t from outside the recurrence, input dtype
    hs_ptr,  # [T, B, d] input dtype
    saved_ptr,  # [T, B, 4d+NK] ACC_DT: u | s | z | r | alpha
    w_hh_ptr,  # [3 * D_PAD, D_PAD] W_hh, each gate block zero-padded
    w_int_ptr,  # [D_PAD, D_PAD] zero-padded
    w_out_ptr,  # [D_PAD, D_PAD] zero-padded
    len_ptr,  # [B] int64 (read only if HAS_LENGTHS)
    d_p_ptr,  # [T, B, 3d+NK] out, ACC_DT
    d_zp_ptr,  # [T, B, d] out, ACC_DT
    d_yp_ptr,  # [T, B, d] out, ACC_DT
    d_h0_ptr,  # [B, d] out, dtype of h0
    scratch_ptr,  # [2, B, 5 * D_PAD] input dtype: dyp | dzp | da | ds | dr operands (streamed only)
    comp_ptr,  # [d] int32 compartment of each unit (read only if NK > 0)
    w_e_ptr,  # [K_PAD, D_PAD] input dtype: W_hh's attention rows, zero-padded (read only if NK > 0)
    mask_ptr,  # [T, B, d] ACC_DT dropout mask (read only if HAS_MASK); MASK_HASH: [1] its kept value
    decay_ptr,  # [T, B, d] ACC_DT time decay (read only if HAS_DECAY); DECAY_RATE: [2, d] the rates (twice)
    dt_ptr,  # [T, B] ACC_DT time decay's gaps (read only if DECAY_RATE)
    h0_ptr,  # [B, d] input dtype (read only if DECAY_RATE)
    hd_ptr,  # [T, B, d] out, ACC_DT: the decayed states (written only if DECAY_RATE)
    d_rate_ptr,  # [2, cdiv(B, BLOCK_B), D_PAD] ACC_DT zeros: dL/drate per step parity and program (DECAY_RATE)
    d_dt_ptr,  # [T, B] out, ACC_DT: dL/ddt (written only if DECAY_RATE)
    T, B, D,
    seed_lo, seed_hi, threshold,  # int32 bits of the dropout seed's halves and threshold (MASK_HASH)
    HAS_LENGTHS: tl.constexpr, RESIDENT: tl.constexpr, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    RELU: tl.constexpr, NK: tl.constexpr, K_PAD: tl.constexpr, HAS_MASK: tl.constexpr,
    HAS_DECAY: tl.constexpr, MASK_HASH: tl.constexpr, DECAY_RATE: tl.constexpr,
    BLOCK_B: tl.constexpr, D_PAD: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    cols = tl.arange(0, D_PAD)  # [D_PAD]
    row_ok = rows < B
    col_ok = cols < D
    r1 = rows * D  # row offsets into [B, d], [B, 3d+NK], [B, 4d+NK]
    r3 = rows * (3 * D + NK)
    r4 = rows * (4 * D + NK)
    if NK > 0:
        kc = tl.arange(0, K_PAD)  # compartment lanes
        kc_ok = kc < NK
        comp = tl.load(comp_ptr + cols, mask=col_ok, other=-1)  # [D_PAD] int32 (-1: padded lane)
    if HAS_LENGTHS:
        length = tl.load(len_ptr + rows, mask=row_ok, other=0)
    if RESIDENT:  # W tiles [D_PAD, D_PAD] (not transposed), loaded once
        wo = offsets(cols, cols, D_PAD)  # (k, n) -> W[k, n]
        w_a = tl.load(w_hh_ptr + wo).to(OP_DT)
        w_s = tl.load(w_hh_ptr + D_PAD * D_PAD + wo).to(OP_DT)
        w_r = tl.load(w_hh_ptr + 2 * D_PAD * D_PAD + wo).to(OP_DT)
        w_i = tl.load(w_int_ptr + wo).to(OP_DT)
        w_o = tl.load(w_out_ptr + wo).to(OP_DT)
        if NK > 0:
            w_e = tl.load(w_e_ptr + offsets(kc, cols, D_PAD)).to(OP_DT)  # [K_PAD, D_PAD]
    else:
        w_k = tl.arange(0, BLOCK_K) * D_PAD  # W chunk [BLOCK_K, D_PAD]: (k, n) -> W[k0 + k, n]
        r5 = rows * (5 * D_PAD)  # row offsets into a [B, 5 * D_PAD] scratch buffer

    dh = tl.zeros([BLOCK_B, D_PAD], ACC_DT)
    last = tl.cast(T, tl.int64) - 1
    grad_t = grad_ptr + last * B * D  # step pointers walk back one step per iteration
    hs_t = hs_ptr + last * B * D
    sv_t = saved_ptr + last * B * (4 * D + NK)
    d_p_t = d_p_ptr + last * B * (3 * D + NK)
    mask_t = mask_ptr  # MASK_HASH: the kept value; else mask[t]
    if not MASK_HASH:
        mask_t += last * B * D
    decay_t = decay_ptr  # DECAY_RATE: the rates; else decay[t]
    if not DECAY_RATE:
        decay_t += last * B * D
    dt_t = dt_ptr + last * B
    d_zp_t = d_zp_ptr + last * B * D
    d_yp_t = d_yp_ptr + last * B * D
    scr = scratch_ptr
    for i in range(0, T):
        t = T - 1 - i
        h_new = load_block(hs_t, r1, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)
        if DECAY_RATE:
            if i > 0:  # step t+1's decay terms, now that its state h_t is here (_decay_terms)
                _decay_terms(d_rate_ptr, dh, h_new, t + 1, rows, cols, row_ok, col_ok, r1, decay_ptr, dt_ptr, hd_ptr,
                             d_dt_ptr, B, D, length if HAS_LENGTHS else rows, HAS_LENGTHS, EVEN_B, EVEN_D, D_PAD)
            decay_t = decay_ptr + (t % 2) * D  # this step's rates, by parity (see _decay_terms)
        dh += load_block(grad_t, r1, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)
        if HAS_LENGTHS:
            live = (t < length)[:, None]  # [BLOCK_B, 1]

        dyp = dh * (1.0 - h_new * h_new)
        if HAS_LENGTHS:
            dyp = tl.where(live, dyp, 0.0)
        store_block(d_yp_t, r1, cols, dyp, row_ok, col_ok, EVEN_B, EVEN_D)
        # dq = dyp @ W_out
        dq = tl.zeros([BLOCK_B, D_PAD], ACC_DT)
        if RESIDENT:
            dq = tl.dot(operand(dyp, IN_DT, OP_DT), w_o, dq, input_precision=PRECISION, out_dtype=ACC_DT)
        else:
            store_block(scr, r5, cols, rn(dyp, IN_DT), row_ok, col_ok, EVEN_B, True)
            tl.debug_barrier()
            dq = mm_chunked(dq, scr, r5, row_ok, w_out_ptr, w_k, cols, D_PAD, col_ok, D,
                            BLOCK_K, EVEN_B, True, True, IN_DT, OP_DT, PRECISION)
        z = load_block(sv_t + 2 * D, r4, cols, row_ok, col_ok, EVEN_B, EVEN_D)
        r = load_block(sv_t + 3 * D, r4, cols, row_ok, col_ok, EVEN_B, EVEN_D)
        dzp = dq * r * (1.0 - z * z)
        dr = dq * z * r * (1.0 - r)
        if HAS_LENGTHS:
            dzp = tl.where(live, dzp, 0.0)
            dr = tl.where(live, dr, 0.0)
        store_block(d_zp_t, r1, cols, dzp, row_ok, col_ok, EVEN_B, EVEN_D)
        store_block(d_p_t + 2 * D, r3, cols, dr, row_ok, col_ok, EVEN_B, EVEN_D)
        # do = dzp @ W_int
        do = tl.zeros([BLOCK_B, D_PAD], ACC_DT)
        if RESIDENT:
            do = tl.dot(operand(dzp, IN_DT, OP_DT), w_i, do, input_precision=PRECISION, out_dtype=ACC_DT)
        else:
            store_block(scr + D_PAD, r5, cols, rn(dzp, IN_DT), row_ok, col_ok, EVEN_B, True)
            store_block(scr + 4 * D_PAD, r5, cols, rn(dr, IN_DT), row_ok, col_ok, EVEN_B, True)
            tl.debug_barrier()
            do = mm_chunked(do, scr + D_PAD, r5, row_ok, w_int_ptr, w_k, cols, D_PAD, col_ok, D,
                            BLOCK_K, EVEN_B, True, True, IN_DT, OP_DT, PRECISION)
        u = load_block(sv_t, r4, cols, row_ok, col_ok, EVEN_B, EVEN_D)
        s = load_block(sv_t + D, r4, cols, row_ok, col_ok, EVEN_B, EVEN_D)
        if HAS_MASK:
            do = do * step_mask(mask_t, r1, rows, cols, row_ok, col_ok, t, B, seed_lo, seed_hi, threshold, EVEN_B,
                                EVEN_D, MASK_HASH)
        if NK > 0:
            alpha = load_block(sv_t + 4 * D, r4, kc, row_ok, kc_ok, EVEN_B, False)  # [BLOCK_B, K_PAD]
            d_alpha = NK * segment_sums(do * u * s, comp, kc)  # [BLOCK_B, K_PAD]
            de = alpha * (d_alpha - tl.sum(alpha * d_alpha, axis=1)[:, None])  # softmax backward
            if HAS_LENGTHS:
                de = tl.where(live, de, 0.0)
            store_block(d_p_t + 3 * D, r3, kc, de, row_ok, kc_ok, EVEN_B, False)
            do = do * (NK * spread(alpha, comp))
        if RELU:
            da = tl.where(u > 0.0, do * s, 0.0)
        else:
            da = do * s * (1.0 - u * u)
        ds = do * u * s * (1.0 - s)
        if HAS_LENGTHS:
            da = tl.where(live, da, 0.0)
            ds = tl.where(live, ds, 0.0)
        store_block(d_p_t, r3, cols, da, row_ok, col_ok, EVEN_B, EVEN_D)
        store_block(d_p_t + D, r3, cols, ds, row_ok, col_ok, EVEN_B, EVEN_D)
        # dh_prev = dyp + dP @ W_hh   (dP = [da | ds | dr], K = 3d in three blocks)
        dh_prev = dyp
        if NK > 0:  # the attention rows: de @ W_e (K = K_PAD, one chunk)
            if RESIDENT:
                dh_prev = tl.dot(operand(de, IN_DT, OP_DT), w_e, dh_prev, input_precision=PRECISION, out_dtype=ACC_DT)
            elif NK <= SELECT_MAX_K:  # few rows: rank-1 updates (no 2-D weight address to keep live)
                de_r = rn(de, IN_DT).to(ACC_DT)
                for c in tl.static_range(NK):
                    w_c = tl.load(w_e_ptr + c * D_PAD + cols).to(ACC_DT)  # [D_PAD]: W_e[c, :]
                    de_c = tl.sum(tl.where(kc[None, :] == c, de_r, 0.0), axis=1)  # [BLOCK_B]
                    dh_prev += de_c[:, None] * w_c[None, :]
            else:
                w_eb = tl.load(w_e_ptr + kc[:, None] * D_PAD + cols[None, :]).to(OP_DT)
                dh_prev = tl.dot(operand(de, IN_DT, OP_DT), w_eb, dh_prev, input_precision=PRECISION,
                                 out_dtype=ACC_DT)
        if RESIDENT:
            dh_prev = tl.dot(operand(da, IN_DT, OP_DT), w_a, dh_prev, input_precision=PRECISION, out_dtype=ACC_DT)
            dh_prev = tl.dot(operand(ds, IN_DT, OP_DT), w_s, dh_prev, input_precision=PRECISION, out_dtype=ACC_DT)
            dh_prev = tl.dot(operand(dr, IN_DT, OP_DT), w_r, dh_prev, input_precision=PRECISION, out_dtype=ACC_DT)
        else:
            store_block(scr + 2 * D_PAD, r5, cols, rn(da, IN_DT), row_ok, col_ok, EVEN_B, True)
            store_block(scr + 3 * D_PAD, r5, cols, rn(ds, IN_DT), row_ok, col_ok, EVEN_B, True)
            tl.debug_barrier()
            for g in tl.static_range(3):
                dh_prev = mm_chunked(dh_prev, scr + (2 + g) * D_PAD, r5, row_ok, w_hh_ptr + g * D_PAD * D_PAD,
                                     w_k, cols, D_PAD, col_ok, D, BLOCK_K, EVEN_B, True, True,
                                     IN_DT, OP_DT, PRECISION)
            scr = scratch_ptr + ((i + 1) % 2) * (B * 5 * D_PAD)
        if HAS_DECAY:  # dh_prev is dL/dhd; the state h_{t-1} reached the step through hd = decay[t] * h_{t-1}
            dh_prev = dh_prev * step_decay(decay_t, dt_t, r1, rows, cols, row_ok, col_ok, EVEN_B, EVEN_D, DECAY_RATE)
            if DECAY_RATE:
                dt_t -= B
            else:
                decay_t -= B * D
        if HAS_LENGTHS:
            dh = tl.where(live, dh_prev, dh)
        else:
            dh = dh_prev
        if HAS_MASK and not MASK_HASH:
            mask_t -= B * D
        grad_t -= B * D
        hs_t -= B * D
        sv_t -= B * (4 * D + NK)
        d_p_t -= B * (3 * D + NK)
        d_zp_t -= B * D
        d_yp_t -= B * D
    store_block(d_h0_ptr, r1, cols, rn(dh, d_h0_ptr.dtype.element_ty), row_ok, col_ok, EVEN_B, EVEN_D)
    if DECAY_RATE:  # step 0's decay terms (its state: h0)
        h_first = load_block(h0_ptr, r1, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)
        _decay_terms(d_rate_ptr, dh, h_first, 0, rows, cols, row_ok, col_ok, r1, decay_ptr, dt_ptr, hd_ptr, d_dt_ptr,
                     B, D, length if HAS_LENGTHS else rows, HAS_LENGTHS, EVEN_B, EVEN_D, D_PAD)


@triton.jit(do_not_specialize=["B", "seed_lo", "seed_hi", "threshold"])
def diru_integration_inputs(
    saved_ptr,  # [T, B, 4d+NK] ACC_DT: u | s | z | r | alpha
    comp_ptr,  # [d] int32 (read only if NK > 0)
    mask_ptr,  # [T, B, d] ACC_DT (read only if HAS_MASK); MASK_HASH: [1] the kept value
    o_ptr,  # [T, B, d] out, ACC_DT: o = u s (* NK alpha_c) (* mask)
    R, B, D,  # R = T * B rows
    seed_lo, seed_hi, threshold,  # int32 bits of the dropout seed's halves and threshold (MASK_HASH)
    NK: tl.constexpr, K_PAD: tl.constexpr, HAS_MASK: tl.constexpr, MASK_HASH: tl.constexpr,
    BLOCK_R: tl.constexpr, D_PAD: tl.constexpr,
):
    """The integration inputs of every step, in the contract's order (``u s``, then the attention scale,
    then the mask; zero on padded steps, whose saved gates are zero): grid ``(cdiv(T*B, BLOCK_R),)``, a
    program owns BLOCK_R rows ``r = t*B + b`` and all d units (D_PAD >= d)."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] row-step index t*B + b
    cols = tl.arange(0, D_PAD)
    r_ok = r < R
    col_ok = cols < D
    r4 = tl.cast(r, tl.int64) * (4 * D + NK)
    o = load_block(saved_ptr, r4, cols, r_ok, col_ok, False, False) * \
        load_block(saved_ptr + D, r4, cols, r_ok, col_ok, False, False)
    if NK > 0:
        kc = tl.arange(0, K_PAD)
        alpha = load_block(saved_ptr + 4 * D, r4, kc, r_ok, kc < NK, False, False)
        o = o * (NK * spread(alpha, tl.load(comp_ptr + cols, mask=col_ok, other=-1)))
    r1 = tl.cast(r, tl.int64) * D
    if HAS_MASK:
        if MASK_HASH:  # row r = t*B + b is step t = r // B, batch row b = r % B: the hash takes t*B + b = r
            o = o * dropout_mask(r, cols, 0, B, seed_lo, seed_hi, threshold, tl.load(mask_ptr))
        else:
            o = o * load_block(mask_ptr, r1, cols, r_ok, col_ok, False, False)
    store_block(o_ptr, r1, cols, o, r_ok, col_ok, False, False)

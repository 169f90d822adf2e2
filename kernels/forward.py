"""Persistent forward kernel: one launch runs the whole sequence of one layer and direction.

Grid ``(cdiv(B, BLOCK_B),)``: program i owns batch rows ``[i*BLOCK_B, (i+1)*BLOCK_B)`` for all
T steps. Its state ``h [BLOCK_B, D_PAD]`` stays in registers in ACC_DT (fp32, or fp64 under
the interpreter) across the time loop. Per step (``P = xp_t + h W_hh^T = [a | s_pre | r_pre]``)::

    u = tanh(a), s = sigmoid(s_pre), r = sigmoid(r_pre), o = u*s        (3 accumulators)
    z = tanh(o W_int^T + b_int), q = z*r
    h' = tanh(q W_out^T + b_out + h);   h' = where(t < len, h', h)       (select, never blend)

Weights arrive zero-padded to the tile by the launcher (``w_hh [3, D_PAD, D_PAD]``,
``w_int``/``w_out [D_PAD, D_PAD]``, biases ``[D_PAD]``; no copy when d == D_PAD), so no weight
load is masked and the padded lanes of every product are exact zeros. Two weight regimes
(constexpr RESIDENT):

- RESIDENT (small d): the five d x d weight tiles are loaded once, before the time loop (the
  compiler keeps them in shared memory), and the three products take the register operands
  h, o, q directly (one K chunk).
- streamed (larger d): each product runs in BLOCK_K-column chunks. Its left operand (h, o or
  q, rounded to the storage dtype) is written to a per-program scratch row block and read
  back chunk by chunk after a CTA barrier (h is read back from hs[t-1] itself, o and q from
  a D_PAD-wide scratch buffer); the weight chunks stream from L2 every step.
  Accumulators stay full width ``[BLOCK_B, D_PAD]`` in registers, so all elementwise work
  and the masking happen in registers. Three barriers per step (after writing hs[t], o, q).
  Addresses are a moving scalar base + 1-D offsets (see ``tiles``); the scratch alternates
  between two buffers by step parity, so no 2-D address tensor is loop invariant.

Options (constexpr flags; the defaults compile the plain cell above, docs/THEORY.md §1.2–1.6):

- RELU: ``u = max(a, 0)`` instead of ``tanh(a)``.
- NK > 0 (attention over NK compartments): xp and W_hh carry NK more columns / rows, the logits
  ``e = xp_t[:, 3d:] + h W_e^T`` ``[BLOCK_B, K_PAD]`` (W_e = W_hh's last NK rows, zero-padded by
  the launcher to ``[K_PAD, D_PAD]``; lanes >= NK are -inf before the softmax), ``alpha =
  softmax(e)``, and ``o *= NK * alpha[:, comp[j]]`` (``_math.spread``, a gather) with the int32
  ``compartment_of`` vector ``comp`` (loaded once); alpha goes to ``saved[t][:, 4d:]``. The streamed
  regime forms the logits' h part as NK row dot products with h in registers (NK <= SELECT_MAX_K;
  an MMA in the K-chunk loop made the fp32 d_pad = 256 forward spill), resident as one more MMA.
- HAS_MASK: ``o *= mask[t]`` (compartment dropout, after the attention scaling). MASK_HASH: the mask is
  formed in the step from its seed (``_math.dropout_mask``: the hash of diru_fast/scan/dropout.py, the
  kept value read from ``mask_ptr[0]``), nothing ``[T, B, d]`` is read.
- HAS_DECAY (time decay): the step reads ``hd = decay[t] * h`` instead of h, in the products with
  W_hh (and W_e) and in the residual (``h' = tanh(q W_out^T + b_out + hd)``); a masked step keeps the
  undecayed h. RESIDENT forms hd in registers; streamed writes it (rounded to the storage dtype) to a
  third D_PAD-wide scratch slot, read back after a barrier in place of hs[t-1] (still three barriers
  per step: hs[t] is no longer an operand), and reloads the decay tile for the residual. DECAY_RATE:
  the factors are formed in the step, ``exp(-rate * dt[t])`` (``_math.decay_factors``; ``decay_ptr`` is
  the rates ``softplus(lambda) [d]``, ``dt_ptr`` the gaps ``[T, B]``), nothing ``[T, B, d]`` is read.

Outputs: ``hs[t]`` in the input dtype; ``saved[t] = [u | s | z | r (| alpha)]`` in ACC_DT (zeros on
masked steps) when NEED_SAVED.
"""

import triton
import triton.language as tl

from ._math import (SELECT_MAX_K, decay_factors, device_fn, dropout_mask, operand, rn, sigmoid, softmax_rows,
                    spread, tanh)
from .tiles import load_block, mm_chunked, offsets_t, store_block


@device_fn
def _select_logits(e, hr, w_e_ptr, cols, kc, NK: tl.constexpr, D_PAD: tl.constexpr, ACC_DT: tl.constexpr):
    """``e [BLOCK_B, K_PAD] += hr W_e^T`` as NK row dot products with ``hr`` (the rounded state in
    registers, ``[BLOCK_B, D_PAD]``): few logits need no MMA."""
    for c in tl.static_range(NK):
        w_c = tl.load(w_e_ptr + c * D_PAD + cols).to(ACC_DT)  # [D_PAD]: W_e[c, :]
        e += tl.where(kc[None, :] == c, tl.sum(hr * w_c[None, :], axis=1)[:, None], 0.0)
    return e


@device_fn
def step_decay(decay_t, dt_t, r1, rows, cols, row_ok, col_ok, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
               DECAY_RATE: tl.constexpr):
    """The decay factors of one step ``[BLOCK_B, D_PAD]``: read from ``decay[t]``, or formed from the rates
    and ``dt[t]`` (DECAY_RATE)."""
    if DECAY_RATE:
        return decay_factors(decay_t, dt_t, rows, cols, row_ok, col_ok)
    return load_block(decay_t, r1, cols, row_ok, col_ok, EVEN_B, EVEN_D)


@device_fn
def step_mask(mask_t, r1, rows, cols, row_ok, col_ok, t, B, seed_lo, seed_hi, threshold, EVEN_B: tl.constexpr,
              EVEN_D: tl.constexpr, MASK_HASH: tl.constexpr):
    """The dropout mask of one step ``[BLOCK_B, D_PAD]``: read from ``mask[t]``, or formed from its seed
    (MASK_HASH; ``mask_t`` points at the kept value)."""
    if MASK_HASH:
        return dropout_mask(rows, cols, t, B, seed_lo, seed_hi, threshold, tl.load(mask_t))
    return load_block(mask_t, r1, cols, row_ok, col_ok, EVEN_B, EVEN_D)


# no recompiles per batch size / length / seed
@triton.jit(do_not_specialize=["T", "B", "seed_lo", "seed_hi", "threshold"])
def diru_fwd_persistent(
    xp_ptr,  # [T, B, 3d+NK] input dtype: x W_ih^T + b_ih for all steps
    h0_ptr,  # [B, d] input dtype
    w_hh_ptr,  # [3 * D_PAD, D_PAD] W_hh, each gate block zero-padded
    w_int_ptr,  # [D_PAD, D_PAD] zero-padded
    b_int_ptr,  # [D_PAD] zero-padded
    w_out_ptr,  # [D_PAD, D_PAD] zero-padded
    b_out_ptr,  # [D_PAD] zero-padded
    len_ptr,  # [B] int64 valid steps per row (read only if HAS_LENGTHS)
    hs_ptr,  # [T, B, d] out, input dtype
    saved_ptr,  # [T, B, 4d+NK] out, ACC_DT: u | s | z | r | alpha (written only if NEED_SAVED)
    scratch_ptr,  # [2, B, SCR_W] input dtype: o | q (| hd) operands, one buffer per step parity (streamed only)
    comp_ptr,  # [d] int32 compartment of each unit (read only if NK > 0)
    w_e_ptr,  # [K_PAD, D_PAD] input dtype: W_hh's attention rows, zero-padded (read only if NK > 0)
    mask_ptr,  # [T, B, d] ACC_DT dropout mask (read only if HAS_MASK); MASK_HASH: [1] its kept value
    decay_ptr,  # [T, B, d] ACC_DT time decay (read only if HAS_DECAY); DECAY_RATE: [2, d] the rates (twice)
    dt_ptr,  # [T, B] ACC_DT time decay's gaps (read only if DECAY_RATE)
    T, B, D,
    seed_lo, seed_hi, threshold,  # int32 bits of the dropout seed's halves and threshold (MASK_HASH)
    HAS_LENGTHS: tl.constexpr, NEED_SAVED: tl.constexpr, RESIDENT: tl.constexpr,
    RELU: tl.constexpr, NK: tl.constexpr, K_PAD: tl.constexpr, HAS_MASK: tl.constexpr,
    HAS_DECAY: tl.constexpr, MASK_HASH: tl.constexpr, DECAY_RATE: tl.constexpr,
    EVEN_B: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_B: tl.constexpr, D_PAD: tl.constexpr, BLOCK_K: tl.constexpr,
    IN_DT: tl.constexpr, OP_DT: tl.constexpr, ACC_DT: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    cols = tl.arange(0, D_PAD)  # [D_PAD]
    row_ok = rows < B
    col_ok = cols < D
    r1 = rows * D  # row offsets into [B, d] (h0, hs[t]), [B, 3d+NK] (xp[t]), [B, 4d+NK] (saved[t])
    r3 = rows * (3 * D + NK)
    r4 = rows * (4 * D + NK)
    if NK > 0:
        kc = tl.arange(0, K_PAD)  # compartment lanes
        kc_ok = kc < NK
        comp = tl.load(comp_ptr + cols, mask=col_ok, other=-1)  # [D_PAD] int32 (-1: padded lane)
    h = load_block(h0_ptr, r1, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)  # [BLOCK_B, D_PAD]
    b_int = tl.load(b_int_ptr + cols).to(ACC_DT)[None, :]
    b_out = tl.load(b_out_ptr + cols).to(ACC_DT)[None, :]
    if HAS_LENGTHS:
        length = tl.load(len_ptr + rows, mask=row_ok, other=0)
    if RESIDENT:  # W^T tiles [D_PAD, D_PAD], loaded once for the whole sequence
        wt = offsets_t(cols, cols, D_PAD)  # (k, n) -> W[n, k]
        w_a = tl.load(w_hh_ptr + wt).to(OP_DT)
        w_s = tl.load(w_hh_ptr + D_PAD * D_PAD + wt).to(OP_DT)
        w_r = tl.load(w_hh_ptr + 2 * D_PAD * D_PAD + wt).to(OP_DT)
        w_i = tl.load(w_int_ptr + wt).to(OP_DT)
        w_o = tl.load(w_out_ptr + wt).to(OP_DT)
        if NK > 0:
            w_e = tl.load(w_e_ptr + offsets_t(cols, kc, D_PAD)).to(OP_DT)  # W_e^T [D_PAD, K_PAD]
    else:
        kr = tl.arange(0, BLOCK_K)
        wt_n = cols * D_PAD  # W^T chunk [BLOCK_K, D_PAD]: (k, n) -> W[n, k0 + k] at k0 + kr + n*D_PAD
        SCR_W: tl.constexpr = (3 if HAS_DECAY else 2) * D_PAD  # scratch row: o | q (| hd)
        r2 = rows * SCR_W  # row offsets into a [B, SCR_W] scratch buffer
        if NK > 0:
            wt_e = kc * D_PAD  # W_e^T chunk [BLOCK_K, K_PAD]

    xp_t = xp_ptr  # step pointers advance one step per iteration (64-bit pointer arithmetic)
    hs_t = hs_ptr
    sv_t = saved_ptr
    h_src = h0_ptr  # the storage-dtype copy of h_{t-1} the streamed products read: h0, then hs[t-1]
    scr = scratch_ptr  # this step's scratch buffer (alternates, so no address is loop invariant)
    mask_t = mask_ptr
    decay_t = decay_ptr
    dt_t = dt_ptr
    for t in range(0, T):
        if DECAY_RATE:  # the rates [2, d]: two copies read by step parity, so the load is not loop invariant
            decay_t = decay_ptr + (t % 2) * D  # (hoisted out of the loop it would hold registers throughout)
        if HAS_DECAY:  # hd = decay[t] * h, the state this step reads (h itself is kept for masked rows)
            hd = h * step_decay(decay_t, dt_t, r1, rows, cols, row_ok, col_ok, EVEN_B, EVEN_D, DECAY_RATE)
            if not RESIDENT:  # the products' operand: rounded hd in the scratch's third slot
                hr = rn(hd, IN_DT)
                store_block(scr + 2 * D_PAD, r2, cols, hr, row_ok, col_ok, EVEN_B, True)
                if NK > 0 and NK <= SELECT_MAX_K:  # the logits' h part now, while nothing else is live
                    e = load_block(xp_t + 3 * D, r3, kc, row_ok, kc_ok, EVEN_B, False).to(ACC_DT)
                    e = _select_logits(e, hr.to(ACC_DT), w_e_ptr, cols, kc, NK, D_PAD, ACC_DT)
                tl.debug_barrier()
        a = load_block(xp_t, r3, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)
        s_pre = load_block(xp_t + D, r3, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)
        r_pre = load_block(xp_t + 2 * D, r3, cols, row_ok, col_ok, EVEN_B, EVEN_D).to(ACC_DT)
        if NK > 0 and not (HAS_DECAY and not RESIDENT and NK <= SELECT_MAX_K):
            e = load_block(xp_t + 3 * D, r3, kc, row_ok, kc_ok, EVEN_B, False).to(ACC_DT)  # [BLOCK_B, K_PAD]
        # P = xp_t + h W_hh^T
        if RESIDENT:
            if HAS_DECAY:
                hx = operand(hd, IN_DT, OP_DT)
            else:
                hx = operand(h, IN_DT, OP_DT)
            a = tl.dot(hx, w_a, a, input_precision=PRECISION, out_dtype=ACC_DT)
            s_pre = tl.dot(hx, w_s, s_pre, input_precision=PRECISION, out_dtype=ACC_DT)
            r_pre = tl.dot(hx, w_r, r_pre, input_precision=PRECISION, out_dtype=ACC_DT)
            if NK > 0:
                e = tl.dot(hx, w_e, e, input_precision=PRECISION, out_dtype=ACC_DT)
        else:
            for k0 in range(0, D, BLOCK_K):
                if HAS_DECAY:
                    hx = load_block(scr + 2 * D_PAD + k0, r2, kr, row_ok, kr >= 0, EVEN_B, True).to(OP_DT)
                else:
                    hx = load_block(h_src + k0, r1, kr, row_ok, (k0 + kr) < D, EVEN_B, EVEN_D).to(OP_DT)
                w = tl.load(w_hh_ptr + k0 + kr[:, None] + wt_n[None, :]).to(OP_DT)
                a = tl.dot(hx, w, a, input_precision=PRECISION, out_dtype=ACC_DT)
                w = tl.load(w_hh_ptr + D_PAD * D_PAD + k0 + kr[:, None] + wt_n[None, :]).to(OP_DT)
                s_pre = tl.dot(hx, w, s_pre, input_precision=PRECISION, out_dtype=ACC_DT)
                w = tl.load(w_hh_ptr + 2 * D_PAD * D_PAD + k0 + kr[:, None] + wt_n[None, :]).to(OP_DT)
                r_pre = tl.dot(hx, w, r_pre, input_precision=PRECISION, out_dtype=ACC_DT)
                if NK > SELECT_MAX_K:
                    w = tl.load(w_e_ptr + k0 + kr[:, None] + wt_e[None, :]).to(OP_DT)
                    e = tl.dot(hx, w, e, input_precision=PRECISION, out_dtype=ACC_DT)
            if NK > 0 and NK <= SELECT_MAX_K and not HAS_DECAY:  # few logits: row dot products with h, no MMA
                e = _select_logits(e, rn(h, IN_DT).to(ACC_DT), w_e_ptr, cols, kc, NK, D_PAD, ACC_DT)
        if RELU:
            u = tl.maximum(a, 0.0)
        else:
            u = tanh(a)
        s = sigmoid(s_pre)
        r = sigmoid(r_pre)
        if HAS_LENGTHS:
            live = (t < length)[:, None]  # [BLOCK_B, 1]
        if NEED_SAVED:  # store the gates as soon as they exist (short live ranges, fewer registers)
            if HAS_LENGTHS:
                store_block(sv_t, r4, cols, tl.where(live, u, 0.0), row_ok, col_ok, EVEN_B, EVEN_D)
                store_block(sv_t + D, r4, cols, tl.where(live, s, 0.0), row_ok, col_ok, EVEN_B, EVEN_D)
                store_block(sv_t + 3 * D, r4, cols, tl.where(live, r, 0.0), row_ok, col_ok, EVEN_B, EVEN_D)
            else:
                store_block(sv_t, r4, cols, u, row_ok, col_ok, EVEN_B, EVEN_D)
                store_block(sv_t + D, r4, cols, s, row_ok, col_ok, EVEN_B, EVEN_D)
                store_block(sv_t + 3 * D, r4, cols, r, row_ok, col_ok, EVEN_B, EVEN_D)
        if HAS_MASK:  # o = u*s*mask (*g below); this order keeps the fp32 d_pad = 256 forward free of spills
            o = u * (s * step_mask(mask_t, r1, rows, cols, row_ok, col_ok, t, B, seed_lo, seed_hi, threshold,
                                   EVEN_B, EVEN_D, MASK_HASH))
            if not MASK_HASH:
                mask_t += B * D
        else:
            o = u * s  # exact zeros in the padded lanes (a = 0 there)
        if NK > 0:
            alpha = softmax_rows(e, kc_ok)  # [BLOCK_B, K_PAD], zeros in lanes >= NK
            if NEED_SAVED:
                if HAS_LENGTHS:
                    store_block(sv_t + 4 * D, r4, kc, tl.where(live, alpha, 0.0), row_ok, kc_ok, EVEN_B, False)
                else:
                    store_block(sv_t + 4 * D, r4, kc, alpha, row_ok, kc_ok, EVEN_B, False)
            o = o * (NK * spread(alpha, comp))  # NK * alpha[:, comp[j]]
        # z = tanh(o W_int^T + b_int)
        zp = tl.zeros([BLOCK_B, D_PAD], ACC_DT) + b_int
        if RESIDENT:
            zp = tl.dot(operand(o, IN_DT, OP_DT), w_i, zp, input_precision=PRECISION, out_dtype=ACC_DT)
        else:
            store_block(scr, r2, cols, rn(o, IN_DT), row_ok, col_ok, EVEN_B, True)
            tl.debug_barrier()
            zp = mm_chunked(zp, scr, r2, row_ok, w_int_ptr, kr, wt_n, 1, col_ok, D,
                            BLOCK_K, EVEN_B, True, True, IN_DT, OP_DT, PRECISION)
        z = tanh(zp)
        if NEED_SAVED:
            if HAS_LENGTHS:
                store_block(sv_t + 2 * D, r4, cols, tl.where(live, z, 0.0), row_ok, col_ok, EVEN_B, EVEN_D)
            else:
                store_block(sv_t + 2 * D, r4, cols, z, row_ok, col_ok, EVEN_B, EVEN_D)
            sv_t += B * (4 * D + NK)
        q = z * r
        # h' = tanh(q W_out^T + b_out + h)   (hd with time decay)
        if HAS_DECAY:
            if RESIDENT:
                y = hd + b_out
            else:  # the decay tile again (short live ranges)
                y = h * step_decay(decay_t, dt_t, r1, rows, cols, row_ok, col_ok, EVEN_B, EVEN_D, DECAY_RATE) + b_out
            if DECAY_RATE:
                dt_t += B
            else:
                decay_t += B * D
        else:
            y = h + b_out
        if RESIDENT:
            y = tl.dot(operand(q, IN_DT, OP_DT), w_o, y, input_precision=PRECISION, out_dtype=ACC_DT)
        else:
            store_block(scr + D_PAD, r2, cols, rn(q, IN_DT), row_ok, col_ok, EVEN_B, True)
            tl.debug_barrier()
            y = mm_chunked(y, scr + D_PAD, r2, row_ok, w_out_ptr, kr, wt_n, 1, col_ok, D,
                           BLOCK_K, EVEN_B, True, True, IN_DT, OP_DT, PRECISION)
        h_new = tanh(y)
        if HAS_LENGTHS:
            h = tl.where(live, h_new, h)
        else:
            h = h_new
        store_block(hs_t, r1, cols, rn(h, hs_ptr.dtype.element_ty), row_ok, col_ok, EVEN_B, EVEN_D)
        if not RESIDENT:
            if not HAS_DECAY:
                tl.debug_barrier()  # hs[t] is the next step's h operand
                h_src = hs_t
            scr = scratch_ptr + ((t + 1) % 2) * (B * SCR_W)
        xp_t += B * (3 * D + NK)
        hs_t += B * D

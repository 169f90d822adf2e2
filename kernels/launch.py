"""Launchers: allocate outputs, pick the configuration and grid, launch the kernels.

``scan_fwd`` / ``scan_bwd`` have the signatures and semantics of the kernel contract
(``diru_fast.scan.contract``); ``diru_fast.providers.triton`` exposes them as the "triton"
backend. Tensors must be contiguous (the custom ops make them so) and on one device: CUDA,
or CPU under ``TRITON_INTERPRET=1`` (set before triton is imported).

Dtypes: float32, bfloat16, float16 (state, gates and gradients in float32); float64 under the
interpreter (gradcheck; Triton >= 3.5, see ``FLOAT64_PROBLEM``). fp32 products run as 3xTF32 on tensor cores
(fp32-level accuracy) unless PyTorch allows TF32 matmuls (then TF32, like PyTorch's own matmuls;
:func:`tf32_allowed` reads the setting); see ``config.dot_precision``.
"""

from __future__ import annotations

import contextlib

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import backward, compat, config as cfgs, forward, step

_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16,
              torch.float64: tl.float64}
#: Why this Triton cannot run the float64 kernels (None: it can; the interpreter is their only user).
FLOAT64_PROBLEM = compat.float64_problem(triton.__version__)
#: Why this Triton cannot run attention over compartments (None: it can; ``tl.gather`` is from 3.3 on).
ATTENTION_PROBLEM = compat.attention_problem(triton.__version__)
#: The contract's options these kernels fuse (constexpr flags of every regime).
OPTIONS = compat.fused_options(triton.__version__)
SUPPORTED_DTYPES = tuple(d for d in _TL_DTYPES if d != torch.float64 or FLOAT64_PROBLEM is None)
#: True when the kernels were built by the interpreter (TRITON_INTERPRET=1 at import).
INTERPRETED = not isinstance(forward.diru_fwd_persistent, triton.runtime.jit.JITFunction)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _empty(shape, dtype, device) -> Tensor:
    """torch.empty, NaN-filled under DIRU_FAST_POISON=1 so an unwritten element fails tests."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if os.environ.get("DIRU_FAST_POISON") == "1":
        out.fill_(float("nan"))
    return out


def tf32_allowed() -> bool:
    """Whether PyTorch allows TF32 in fp32 matmuls: ``torch.backends.cuda.matmul.fp32_precision`` (the
    API of PyTorch >= 2.9: "tf32" / "ieee", set directly or inherited from
    ``torch.backends.fp32_precision``) when it says so, else the legacy ``allow_tf32`` flag. Reading the
    legacy flag after the new API set the precision raises in PyTorch, so it is read only when the new
    one is absent or "none"."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(matmul.allow_tf32)


def _meta(dtype: torch.dtype) -> dict:
    """The dtype constexprs: storage, dot operand, accumulation dtypes and fp32 dot precision."""
    in_dt = _TL_DTYPES[dtype]
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    # The interpreter's dot cannot multiply bf16/fp16: hand it the (already rounded) operands in fp32.
    op_dt = acc if (INTERPRETED and dtype in (torch.bfloat16, torch.float16)) else in_dt
    precision = cfgs.dot_precision(str(dtype).replace("torch.", ""), INTERPRETED, tf32_allowed())
    return dict(IN_DT=in_dt, OP_DT=op_dt, ACC_DT=acc, PRECISION=precision)


def _check(dtype: torch.dtype, *tensors: Tensor) -> None:
    if dtype not in SUPPORTED_DTYPES:
        why = f" ({FLOAT64_PROBLEM})" if dtype == torch.float64 and FLOAT64_PROBLEM else ""
        raise TypeError(f"diru_fast triton kernels take {', '.join(map(str, SUPPORTED_DTYPES))}; got {dtype}{why}")
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"diru_fast triton kernels: all tensors must be on {device}, one is on {t.device}")
        if not t.is_contiguous():
            raise ValueError("diru_fast triton kernels take contiguous tensors (call .contiguous())")
    if device.type != "cuda" and not INTERPRETED:
        raise ValueError(f"diru_fast triton kernels need CUDA tensors (got {device.type}); on CPU set "
                         "TRITON_INTERPRET=1 before importing triton to run them in the interpreter")


def _device_guard(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _plan(config: Optional[cfgs.KernelConfig], d: int, batch: int, dtype: torch.dtype,
          lengths: Optional[Tensor], placeholder: Tensor, k: int = 0, crowded: bool = False, in_step: bool = False):
    """(config, lengths pointer, constexpr flags) of one launch (``k`` attention compartments, 0:
    none; ``in_step``: an option formed in the step, ``config.for_in_step``); without lengths the kernel
    gets a placeholder pointer it never reads (HAS_LENGTHS=False)."""
    name = str(dtype).replace("torch.", "")
    cfg = config or cfgs.choose(d, name, k, crowded, in_step)
    if in_step and config is None:
        cfg = cfgs.for_in_step(cfg, name, k)
    lens = lengths if lengths is not None else placeholder
    meta = dict(_meta(dtype), HAS_LENGTHS=lengths is not None,
                EVEN_B=batch % cfg.block_b == 0, EVEN_D=_even(cfg, d))
    return cfg, lens, meta


def _int32_bits(value: int) -> int:
    """A uint32 as the int32 with its bits (every kernel then takes it as an i32 scalar, one signature)."""
    return value - (1 << 32) if value >= (1 << 31) else value


class _Options:
    """One call's option constexprs and arguments.

    ``flags``: RELU, NK, K_PAD, HAS_MASK, HAS_DECAY, MASK_HASH, DECAY_RATE. Pointers (an option that is
    off gets a placeholder its kernel never reads): ``comp`` (compartment_of, int32 [d]); ``mask``: the
    mask [T, B, d] in acc, or with a seed (MASK_HASH) its kept value [1]; ``decay``: the factors [T, B,
    d] in acc, or with rates (DECAY_RATE) the rates [d]; ``dt`` [T, B] in acc. ``seeds``: the seed's
    halves and the threshold as int32 bits. All options off: the same constexprs every plain launch
    has (one compiled variant)."""

    def __init__(self, activation, compartment_of, mask, k, acc, placeholder, decay=None, rate=None, dt=None,
                 mask_seed=None, mask_threshold=0, mask_scale=1.0):
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        if compartment_of is not None and ATTENTION_PROBLEM:
            raise NotImplementedError(ATTENTION_PROBLEM)
        if (rate is None) != (dt is None):
            raise ValueError("diru_fast triton kernels: time decay's rate and dt go together")
        if rate is not None and decay is not None:
            raise ValueError("diru_fast triton kernels: give time decay as decay or as rate and dt, not both")
        if mask_seed is not None and mask is not None:
            raise ValueError("diru_fast triton kernels: give the dropout mask as a tensor or as a seed, not both")
        if mask_seed is not None and not 0 <= mask_threshold <= 0xFFFFFFFF:
            raise ValueError("diru_fast triton kernels: mask_threshold must be in [0, 2^32)")
        nk = k if compartment_of is not None else 0
        self.comp = compartment_of.to(torch.int32).contiguous() if nk else placeholder
        hashed, rated = mask_seed is not None, rate is not None
        if hashed:
            mask = torch.full((1,), mask_scale, dtype=acc, device=placeholder.device)
        elif mask is not None:
            mask = mask.to(acc).contiguous()
        if rated:  # the rates twice, [2, d]: the persistent kernels read them by step parity (nothing hoisted)
            decay, dt = rate.to(acc).expand(2, -1).contiguous(), dt.to(acc).contiguous()
        elif decay is not None:
            decay = decay.to(acc).contiguous()
        self.flags = dict(RELU=activation == "relu", NK=nk, K_PAD=cfgs.pad_compartments(nk),
                          HAS_MASK=mask is not None, HAS_DECAY=decay is not None, MASK_HASH=hashed, DECAY_RATE=rated)
        self.mask = mask if mask is not None else placeholder
        self.decay = decay if decay is not None else placeholder
        self.dt = dt if dt is not None else placeholder
        seed = int(mask_seed) if hashed else 0
        self.seeds = (_int32_bits(seed & 0xFFFFFFFF), _int32_bits((seed >> 32) & 0xFFFFFFFF),
                      _int32_bits(int(mask_threshold)) if hashed else 0)

    @property
    def in_step(self) -> bool:
        """An option formed in the step (the seeded mask or time decay from rates)."""
        return self.flags["MASK_HASH"] or self.flags["DECAY_RATE"]

    @property
    def crowded(self) -> bool:
        """Dropout and time decay both on (cfgs.STREAMED_CROWDED_MAX_D)."""
        return self.flags["HAS_MASK"] and self.flags["HAS_DECAY"]


def _attention_rows(w_hh: Tensor, d: int, nk: int, d_pad: int, k_pad: int, placeholder: Tensor):
    """(W_hh's gate rows [3d, d], its attention rows zero-padded to [k_pad, d_pad]) for the
    persistent kernels (the placeholder when nk == 0)."""
    if not nk:
        return w_hh, placeholder
    w_e = torch.nn.functional.pad(w_hh[3 * d:], (0, d_pad - d, 0, k_pad - nk)).contiguous()
    return w_hh[:3 * d], w_e


def scan_fwd(
    xp: Tensor,  # [T, B, 3d]
    h0: Tensor,  # [B, d]
    w_hh: Tensor,  # [3d, d]
    w_int: Tensor,  # [d, d]
    b_int: Tensor,  # [d]
    w_out: Tensor,  # [d, d]
    b_out: Tensor,  # [d]
    lengths: Optional[Tensor],  # [B] int64
    need_saved: bool,
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,  # [d] int64
    mask: Optional[Tensor] = None,  # [T, B, d] acc dtype
    decay: Optional[Tensor] = None,  # [T, B, d] acc dtype
    config: Optional[cfgs.KernelConfig] = None,
    rate: Optional[Tensor] = None,  # [d]: time decay as its rates softplus(lambda) ...
    dt: Optional[Tensor] = None,  # [T, B]: ... and gaps, decay = exp(-rate dt) formed in the step
    mask_seed: Optional[int] = None,  # the dropout mask as its seed (diru_fast/scan/dropout.py) ...
    mask_threshold: int = 0,  # ... its 32-bit threshold ...
    mask_scale: float = 1.0,  # ... and kept value, formed in the step
) -> Tuple[Tensor, Tensor]:  # hs [T, B, d], saved [T, B, 4d+k] (or [0])
    steps, batch, width = xp.shape
    d = h0.shape[-1]
    k = width - 3 * d if compartment_of is not None else 0
    dtype = xp.dtype
    _check(dtype, xp, h0, w_hh, w_int, b_int, w_out, b_out, *(() if lengths is None else (lengths,)))
    acc = acc_dtype(dtype)
    device = xp.device
    hs = _empty((steps, batch, d), dtype, device)
    saved = _empty((steps, batch, 4 * d + k) if need_saved else (0,), acc, device)
    if steps == 0 or batch == 0:
        return hs, saved
    opt = _Options(activation, compartment_of, mask, k, acc, hs, decay, rate, dt, mask_seed, mask_threshold,
                   mask_scale)
    cfg, lens, meta = _plan(config, d, batch, dtype, lengths, placeholder=hs, k=k, crowded=opt.crowded,
                            in_step=opt.in_step)
    meta.update(opt.flags)
    with _device_guard(device):
        if cfg.persistent:
            _check_pad(cfg, d)
            w_hh, w_e = _attention_rows(w_hh, d, k, cfg.d_pad, meta["K_PAD"], placeholder=hs)
            w_hh, w_int, b_int, w_out, b_out = _pad_weights(cfg.d_pad, w_hh, w_int, b_int, w_out, b_out)
            width = (3 if meta["HAS_DECAY"] else 2) * cfg.d_pad  # o | q (| hd) operands
            scratch = _scratch((2, batch, width), dtype, device) if cfg.mode == "streamed" else hs
            grid = (triton.cdiv(batch, cfg.block_b),)
            forward.diru_fwd_persistent[grid](
                xp, h0, w_hh, w_int, b_int, w_out, b_out, lens, hs, saved if need_saved else hs, scratch,
                opt.comp, w_e, opt.mask, opt.decay, opt.dt,
                steps, batch, d, *opt.seeds, NEED_SAVED=need_saved, RESIDENT=cfg.mode == "resident",
                BLOCK_B=cfg.block_b, D_PAD=cfg.d_pad, BLOCK_K=cfg.block_k,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, maxnreg=cfg.maxnreg, **meta)
        else:
            _fwd_steps(xp, h0, w_hh, w_int, b_int, w_out, b_out, lens, hs, saved, need_saved, cfg, meta, opt)
    return hs, saved


def _even(cfg: cfgs.KernelConfig, d: int) -> bool:
    """True when no hidden-size lane needs a mask (every tile and K chunk lies inside d)."""
    if cfg.persistent:
        return d == cfg.d_pad and d % cfg.block_k == 0
    return d % cfg.block_n == 0 and d % cfg.block_k == 0


def _pad_weights(d_pad: int, w_hh, w_int, b_int, w_out, b_out):
    """Zero-pad the weights to the kernel tile: w_hh [3d, d] -> [3 * d_pad, d_pad] (gate blocks
    padded separately), w_int / w_out -> [d_pad, d_pad], biases -> [d_pad]. No copy when
    d == d_pad. The padded lanes then contribute exact zeros and no weight load needs a mask."""
    d = w_int.shape[0]
    if d == d_pad:
        return w_hh, w_int, b_int, w_out, b_out
    pad2 = lambda w: torch.nn.functional.pad(w, (0, d_pad - d, 0, d_pad - d))  # noqa: E731
    w_hh = pad2(w_hh.reshape(3, d, d)).reshape(3 * d_pad, d_pad)
    pad1 = lambda b: None if b is None else torch.nn.functional.pad(b, (0, d_pad - d))  # noqa: E731
    return w_hh, pad2(w_int), pad1(b_int), pad2(w_out), pad1(b_out)


def _scratch(shape, dtype, device) -> Tensor:
    """Per-program operand scratch: every element a kernel reads it writes first (never poisoned
    with NaN: the padded lanes are written as zeros, but a NaN times a zero weight is NaN)."""
    return torch.zeros(shape, dtype=dtype, device=device)


def _check_pad(cfg: cfgs.KernelConfig, d: int) -> None:
    if cfg.d_pad < d:
        raise ValueError(f"kernel config {cfg.label()} holds d <= {cfg.d_pad}, got d={d}")


def _fwd_steps(xp, h0, w_hh, w_int, b_int, w_out, b_out, lens, hs, saved, need_saved, cfg, meta, opt):
    steps, batch, d = hs.shape
    comp = opt.comp
    mask = opt.mask if meta["HAS_MASK"] else None
    decay = opt.decay if meta["HAS_DECAY"] else None
    hashed, rated = meta["MASK_HASH"], meta["DECAY_RATE"]
    nk = meta["NK"]
    acc = saved.dtype
    h32 = h0.to(acc).clone()  # [B, d] state in the accumulation dtype
    work = None if need_saved else _empty((batch, 4 * d + nk), acc, xp.device)  # gates of the current step
    o_buf = _empty((batch, d), xp.dtype, xp.device)
    q_buf = _empty((batch, d), xp.dtype, xp.device)
    grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(d, cfg.block_n))
    tiles = dict(BLOCK_M=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                 num_warps=cfg.num_warps, num_stages=cfg.num_stages, maxnreg=cfg.maxnreg, **meta)
    tiles = {key: v for key, v in tiles.items() if key not in ("HAS_DECAY", "DECAY_RATE")}
    plain = {key: v for key, v in tiles.items() if key not in ("RELU", "K_PAD", "HAS_MASK", "MASK_HASH")}
    out_tiles = dict({key: v for key, v in plain.items() if key != "NK"}, HAS_DECAY=decay is not None,
                     DECAY_RATE=rated)
    # time decay: the gates' h operand is rn(decay[t] * h_{t-1}), which fwd_out writes for the next step;
    # the first one here (with rates: exp(-rate dt[0]) formed for step 0 only, [B, d])
    hd = None
    if decay is not None:
        hd = (h32 * (torch.exp(-decay[0] * opt.dt[0].unsqueeze(-1)) if rated else decay[0])).to(xp.dtype)
    dt = opt.dt
    for t in range(steps):
        gates = saved[t] if need_saved else work
        h_prev = hd if decay is not None else h0 if t == 0 else hs[t - 1]
        step.diru_fwd_step_gates[grid](xp[t], h_prev, w_hh, lens, gates, o_buf, comp,
                                       hs if mask is None else mask if hashed else mask[t], t, batch, d, *opt.seeds,
                                       **tiles)
        step.diru_fwd_step_int[grid](o_buf, w_int, b_int, lens, gates, q_buf, t, batch, d, **plain)
        nxt = min(t + 1, steps - 1)
        decay_t, decay_next = (hs, hs) if decay is None else (decay, decay) if rated else (decay[t], decay[nxt])
        dt_t, dt_next = (dt[t], dt[nxt]) if rated else (hs, hs)
        step.diru_fwd_step_out[grid](q_buf, w_out, b_out, lens, h32, hs[t], decay_t, decay_next,
                                     hs if hd is None else hd, dt_t, dt_next, t, batch, d, **out_tiles)


def scan_bwd(
    grad_hs: Tensor,  # [T, B, d]
    h0: Tensor,  # [B, d]
    hs: Tensor,  # [T, B, d]
    saved: Tensor,  # [T, B, 4d]
    w_hh: Tensor,  # [3d, d]
    w_int: Tensor,  # [d, d]
    w_out: Tensor,  # [d, d]
    lengths: Optional[Tensor],  # [B] int64
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,  # [d] int64
    mask: Optional[Tensor] = None,  # [T, B, d] acc dtype
    decay: Optional[Tensor] = None,  # [T, B, d] acc dtype
    config: Optional[cfgs.KernelConfig] = None,
    rate: Optional[Tensor] = None,  # [d]: time decay as its rates and gaps (as in scan_fwd)
    dt: Optional[Tensor] = None,  # [T, B]
    mask_seed: Optional[int] = None,  # the dropout mask as its seed, threshold and kept value (as in scan_fwd)
    mask_threshold: int = 0,
    mask_scale: float = 1.0,
    extended: bool = False,
) -> tuple:
    """d_p [T, B, 3d+k], d_zp, d_yp [T, B, d] (acc), d_h0 [B, d]; ``extended``: four more, None where off
    (the CPU kernel's): ``hd [T, B, d]`` the decayed states, ``d_rate [d]`` and ``d_dt [T, B]`` the
    gradients of the rates and gaps (time decay from ``rate`` and ``dt``), ``o [T, B, d]`` the integration
    inputs ``u s (* k alpha_c) (* mask)`` (attention or dropout), all in acc."""
    steps, batch, d = hs.shape
    k = saved.shape[-1] - 4 * d if compartment_of is not None else 0
    dtype = hs.dtype
    _check(dtype, grad_hs, h0, hs, saved, w_hh, w_int, w_out, *(() if lengths is None else (lengths,)))
    acc = saved.dtype
    device = hs.device
    d_p = _empty((steps, batch, 3 * d + k), acc, device)
    d_zp = _empty((steps, batch, d), acc, device)
    d_yp = _empty((steps, batch, d), acc, device)
    d_h0 = _empty((batch, d), h0.dtype, device)
    rated = rate is not None
    want_o = extended and (compartment_of is not None or mask is not None or mask_seed is not None)
    hd = _empty((steps, batch, d), acc, device) if rated else None
    d_dt = _empty((steps, batch), acc, device) if rated else None
    o = _empty((steps, batch, d), acc, device) if want_o else None
    d_rate = None
    if steps == 0 or batch == 0:
        if batch:
            d_h0.zero_()
        if rated:
            d_rate = torch.zeros(d, dtype=acc, device=device)
        return (d_p, d_zp, d_yp, d_h0) + ((hd, d_rate, d_dt, o) if extended else ())
    opt = _Options(activation, compartment_of, mask, k, acc, hs, decay, rate, dt, mask_seed, mask_threshold,
                   mask_scale)
    cfg, lens, meta = _plan(config, d, batch, dtype, lengths, placeholder=hs, k=k, crowded=opt.crowded,
                            in_step=opt.in_step)
    meta.update(opt.flags, WANT_O=want_o)
    with _device_guard(device):
        if cfg.persistent:
            _check_pad(cfg, d)
            w_hh, w_e = _attention_rows(w_hh, d, k, cfg.d_pad, meta["K_PAD"], placeholder=hs)
            w_hh, w_int, _, w_out, _ = _pad_weights(cfg.d_pad, w_hh, w_int, None, w_out, None)
            scratch = _scratch((2, batch, 5 * cfg.d_pad), dtype, device) if cfg.mode == "streamed" else hs
            grid = (triton.cdiv(batch, cfg.block_b),)
            # dL/drate [D_PAD] per step parity and program, summed here (a fixed order: deterministic)
            d_rate_parts = torch.zeros((2, grid[0], cfg.d_pad), dtype=acc, device=device) if rated else hs
            backward.diru_bwd_persistent[grid](
                grad_hs, hs, saved, w_hh, w_int, w_out, lens, d_p, d_zp, d_yp, d_h0, scratch,
                opt.comp, w_e, opt.mask, opt.decay, opt.dt, h0, _or(hd, hs), d_rate_parts, _or(d_dt, hs),
                steps, batch, d, *opt.seeds, RESIDENT=cfg.mode == "resident",
                BLOCK_B=cfg.block_b, D_PAD=cfg.d_pad, BLOCK_K=cfg.block_k,
                num_warps=cfg.num_warps, num_stages=cfg.stages_bwd, maxnreg=cfg.maxnreg,
                **{key: v for key, v in meta.items() if key != "WANT_O"})
            if rated:
                d_rate = d_rate_parts.sum((0, 1))[:d]
            if want_o:
                rows = steps * batch
                backward.diru_integration_inputs[(triton.cdiv(rows, INTEGRATION_ROWS),)](
                    saved, opt.comp, opt.mask, o, rows, batch, d, *opt.seeds, NK=meta["NK"], K_PAD=meta["K_PAD"],
                    HAS_MASK=meta["HAS_MASK"], MASK_HASH=meta["MASK_HASH"], BLOCK_R=INTEGRATION_ROWS,
                    D_PAD=cfg.d_pad, num_warps=4, num_stages=1)
        else:
            d_rate = _bwd_steps(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lens, d_p, d_zp, d_yp, d_h0, cfg, meta,
                                opt, hd, d_dt, o)
    return (d_p, d_zp, d_yp, d_h0) + ((hd, d_rate, d_dt, o) if extended else ())


#: Rows (t, b) per program of the integration-input kernel (backward.diru_integration_inputs).
INTEGRATION_ROWS = 16


def _or(t: Optional[Tensor], placeholder: Tensor) -> Tensor:
    return placeholder if t is None else t


def _bwd_steps(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lens, d_p, d_zp, d_yp, d_h0, cfg, meta, opt, hd, d_dt, o):
    """The per-step backward; returns dL/drate [d] with time decay from rates (else None)."""
    steps, batch, d = hs.shape
    nk = meta["NK"]
    comp = opt.comp
    mask = opt.mask if meta["HAS_MASK"] else None
    decay = opt.decay if meta["HAS_DECAY"] else None
    hashed, rated = meta["MASK_HASH"], meta["DECAY_RATE"]
    acc = saved.dtype
    dh32 = _empty((batch, d), acc, hs.device)  # dL/dh carried between steps
    v = _empty((batch, d), acc, hs.device) if nk else hs  # do*u*s of the current step (attention)
    grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(d, cfg.block_n))
    # time decay from rates: dL/drate per row tile (accumulated over the steps), dL/ddt per column tile
    d_rate_parts = torch.zeros((grid[0], d), dtype=acc, device=hs.device) if rated else hs
    d_dt_parts = _empty((steps, batch, grid[1]), acc, hs.device) if rated else hs
    tiles = dict(BLOCK_M=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                 num_warps=cfg.num_warps, num_stages=cfg.stages_bwd, maxnreg=cfg.maxnreg, **meta)
    tiles = {key: v for key, v in tiles.items() if key not in ("HAS_DECAY", "DECAY_RATE")}
    plain = {key: v for key, v in tiles.items() if key not in ("RELU", "K_PAD", "HAS_MASK", "MASK_HASH", "WANT_O")}
    dh_tiles = dict(plain, HAS_DECAY=meta["HAS_DECAY"], DECAY_RATE=rated)
    att = dict(HAS_LENGTHS=meta["HAS_LENGTHS"], EVEN_B=meta["EVEN_B"], EVEN_D=meta["EVEN_D"], NK=nk,
               K_PAD=meta["K_PAD"], BLOCK_M=cfg.block_b, BLOCK_K=cfg.block_k, ACC_DT=meta["ACC_DT"],
               num_warps=cfg.num_warps, num_stages=cfg.stages_bwd)
    last = steps - 1  # prologue: dh = grad_hs[T-1], d_yp[T-1]
    no_rate = (hs, hs, hs, hs, hs)  # dt_t, h_before, hd_t, d_rate parts, d_dt_t: unread without rates
    step.diru_bwd_step_dh[grid](d_yp[last], d_p[last], w_hh, lens, dh32, grad_hs[last], hs[last], d_yp[last],
                                d_h0, hs, *no_rate, steps, batch, d, HAS_DOT=False, FINAL=False, **dh_tiles)
    for t in range(last, -1, -1):
        step.diru_bwd_step_dq[grid](d_yp[t], saved[t], w_out, lens, d_zp[t], d_p[t], t, batch, d, **plain)
        step.diru_bwd_step_do[grid](d_zp[t], saved[t], w_int, lens, d_p[t], comp,
                                    hs if mask is None else mask if hashed else mask[t], v, hs if o is None else o[t],
                                    t, batch, d, *opt.seeds, **tiles)
        if nk:
            step.diru_bwd_step_att[(grid[0],)](v, saved[t], comp, lens, d_p[t], t, batch, d, **att)
        prev = max(t - 1, 0)  # unused when FINAL
        rate_args = (opt.dt[t], h0 if t == 0 else hs[t - 1], hd[t], d_rate_parts, d_dt_parts[t]) if rated else no_rate
        step.diru_bwd_step_dh[grid](d_yp[t], d_p[t], w_hh, lens, dh32, grad_hs[prev], hs[prev], d_yp[prev],
                                    d_h0, hs if decay is None else decay if rated else decay[t], *rate_args,
                                    t, batch, d, HAS_DOT=True, FINAL=t == 0, **dh_tiles)
    if not rated:
        return None
    d_dt.copy_(d_dt_parts.sum(-1))
    return d_rate_parts.sum(0)

"""Offsets, masked loads and the K-chunked matmul shared by the DIRU Triton kernels.

All weights are row-major PyTorch layouts: ``w_hh [3d, d]``, ``w_int [d, d]``, ``w_out [d, d]``
(out x in). The forward multiplies by W^T (``x @ W^T``), the backward by W (``g @ W``).

Register discipline: inside the time loop, addresses are built as ``(scalar base + row
offsets[:, None]) + column offsets[None, :]`` from a scalar base that moves with the step or
K chunk, and 1-D offset vectors. Nothing 2-D is loop invariant, so the compiler cannot hoist
[rows, cols] pointer/offset/mask tensors out of the time loop and keep them live in
registers (which is what made the first version spill). ``EVEN_B`` (B divisible by the row
tile) and ``EVEN_D`` (d fills the column tiles) drop the row / column masks.
"""

import triton.language as tl

from ._math import device_fn, operand


@device_fn
def offsets(i, j, stride_i):
    """``[len(i), len(j)]`` int32 offsets ``i * stride_i + j``."""
    return i[:, None] * stride_i + j[None, :]


@device_fn
def offsets_t(i, j, stride_j):
    """``[len(i), len(j)]`` int32 offsets ``i + j * stride_j`` (a transposed tile)."""
    return i[:, None] + j[None, :] * stride_j


@device_fn
def load_block(ptr, row_offs, col_offs, row_ok, col_ok, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr):
    """Masked load of the ``[R, C]`` block at ``ptr + row_offs[r] + col_offs[c]`` (0 where masked);
    EVEN_B / EVEN_D drop the row / column masks. The addresses are built from the moving scalar
    ``ptr`` outward, so no 2-D offset tensor is loop invariant (nothing big to hoist)."""
    p = (ptr + row_offs[:, None]) + col_offs[None, :]
    if EVEN_B:
        if EVEN_D:
            return tl.load(p)
        return tl.load(p, mask=col_ok[None, :], other=0.0)
    if EVEN_D:
        return tl.load(p, mask=row_ok[:, None], other=0.0)
    return tl.load(p, mask=row_ok[:, None] & col_ok[None, :], other=0.0)


@device_fn
def store_block(ptr, row_offs, col_offs, value, row_ok, col_ok, EVEN_B: tl.constexpr, EVEN_D: tl.constexpr):
    """Masked store of ``value`` to the block ``load_block`` reads."""
    p = (ptr + row_offs[:, None]) + col_offs[None, :]
    if EVEN_B:
        if EVEN_D:
            tl.store(p, value)
        else:
            tl.store(p, value, mask=col_ok[None, :])
    elif EVEN_D:
        tl.store(p, value, mask=row_ok[:, None])
    else:
        tl.store(p, value, mask=row_ok[:, None] & col_ok[None, :])


@device_fn
def mm_chunked(acc, x_ptr, x_row_offs, row_ok, w_ptr, w_k_offs, w_n_offs, w_kstride, n_ok, D,
               BLOCK_K: tl.constexpr, EVEN_B: tl.constexpr, X_FULL: tl.constexpr, W_FULL: tl.constexpr,
               IN_DT: tl.constexpr, OP_DT: tl.constexpr, PRECISION: tl.constexpr):
    """acc[M, N] += X[:, 0:d] @ W_tile[0:d, N], BLOCK_K columns of X at a time.

    Chunk k0 of X is ``[M, BLOCK_K]``: ``x_ptr + k0 + x_row_offs[m] + kr``; the matching weight
    chunk ``[BLOCK_K, N]``: ``w_ptr + k0 * w_kstride + w_k_offs[kr] + w_n_offs[n]``
    (W^T tiles: w_k_offs = kr, w_n_offs = n*stride, w_kstride = 1; W tiles: w_k_offs =
    kr*stride, w_n_offs = n, w_kstride = stride). X is memory written before a CTA barrier;
    the weight chunks stream from L2/L1. X_FULL: X has readable zeros up to the padded width
    (no column mask); W_FULL: the weights are zero-padded to the tile (no mask at all).
    """
    kr = tl.arange(0, BLOCK_K)
    for k0 in range(0, D, BLOCK_K):
        k_ok = (k0 + kr) < D
        x = load_block(x_ptr + k0, x_row_offs, kr, row_ok, k_ok, EVEN_B, X_FULL)
        w = load_block(w_ptr + k0 * w_kstride, w_k_offs, w_n_offs, k_ok, n_ok, W_FULL, W_FULL)
        acc = tl.dot(operand(x, IN_DT, OP_DT), w.to(OP_DT), acc, input_precision=PRECISION, out_dtype=acc.dtype)
    return acc

"""Helpers shared by the tests: backend lists, random cells, and the expected numbers from the
package's two statements of the math (the prototype's modules in ``diru_fast.reference`` and the
kernel contract in ``diru_fast.scan.contract``), never from a copy of the math of their own."""

from __future__ import annotations

from contextlib import contextmanager

import torch

import diru_fast
from diru_fast import reference
from diru_fast.weights import to_prototype


def cpu_backends():
    """Every backend name that runs on CPU tensors here, plus the contract plumbing."""
    return [b for b in diru_fast.available_backends("cpu")] + ["contract"]


def randomize_(module, seed=0, scale=1.0):
    """Random parameters (biases included) at a given scale, drawn in float64 then cast."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale / max(1, p.shape[-1]) ** 0.5)
    return module


def random_cell(n, d, k=1, dtype=torch.float64, bias=True, seed=0, scale=1.0, backend="auto"):
    """A DIRUCell with random parameters (biases included) at a given scale."""
    return randomize_(diru_fast.DIRUCell(n, d, bias, num_compartments=k, dtype=dtype, backend=backend), seed, scale)


def reference_cell(weights, num_compartments=1):
    """The prototype's cell (``diru_fast.reference.DIRUCell``) holding the given fused weights
    (a :class:`~diru_fast.CellWeights`, or a module with ``cell_weights()``)."""
    if hasattr(weights, "cell_weights"):
        weights = weights.cell_weights()
    d, k = weights.hidden_size, num_compartments
    cell = reference.DIRUCell(weights.input_size, d, k, bias=weights.bias).to(weights.w_hh.dtype)
    cell.load_state_dict({key: v.detach() for key, v in to_prototype(weights, [d // k] * k).items()})
    return cell


def reference_sequence(x, h0, cell, lengths=None, reverse=False):
    """The prototype's cell stepped over x: [T, B, n], sequence by sequence honouring lengths.

    Returns (hs [T, B, d] with zeros on padded steps, h_last [B, d]). reverse=True runs
    each sequence from its own last valid step back to step 0.
    """
    steps, batch, _ = x.shape
    hs = x.new_zeros(steps, batch, cell.hidden_size)
    h_last = []
    for b in range(batch):
        length = steps if lengths is None else int(lengths[b])
        h = h0[b:b + 1]
        order = range(length - 1, -1, -1) if reverse else range(length)
        for t in order:
            h = cell(x[t, b:b + 1], h)
            hs[t, b] = h[0]
        h_last.append(h[0])
    return hs, torch.stack(h_last)


def contract_inputs(T, B, d, dtype=torch.float64, seed=0, *, sizes=None, dropout=None, activation=None,
                    decay=False):
    """Random inputs of the kernel contract's scan_fwd (xp, h0, weights), drawn in float64 then cast.

    With any of the options (``sizes``: compartment sizes, which turn attention on; ``dropout``: p of
    a random mask; ``activation``; ``decay``: random time-decay factors in [0.2, 1]) it returns
    ``(inputs, options)``, the options as scan_fwd's keywords (``activation``, ``compartment_of``,
    ``mask``, and ``decay`` when it is on)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    scale = d ** -0.5
    k = 0 if sizes is None else len(sizes)
    a = dict(xp=r(T, B, 3 * d + k), h0=r(B, d) * 0.5, w_hh=r(3 * d + k, d) * scale, w_int=r(d, d) * scale,
             b_int=r(d) * 0.1, w_out=r(d, d) * scale, b_out=r(d) * 0.1)
    a = {key: v.to(dtype) for key, v in a.items()}
    if sizes is None and dropout is None and activation is None and not decay:
        return a
    opts = dict(activation=activation or "tanh", compartment_of=None, mask=None)
    if sizes is not None:
        assert sum(sizes) == d
        opts["compartment_of"] = torch.repeat_interleave(torch.arange(k), torch.tensor(sizes))
    if dropout:
        keep = torch.rand(T, B, d, generator=g, dtype=torch.float64) >= dropout
        opts["mask"] = (keep / (1 - dropout)).to(dtype if dtype == torch.float64 else torch.float32)
    if decay:
        factors = 0.2 + 0.8 * torch.rand(T, B, d, generator=g, dtype=torch.float64)
        opts["decay"] = factors.to(dtype if dtype == torch.float64 else torch.float32)
    return a, opts


@contextmanager
def cpu_isa(name, threads):
    """Run the block on the C++ kernel's ``name`` instruction-set path (``set_isa``) with ``threads``
    torch threads; both are restored after it."""
    from diru_fast.providers import cpu

    ext = cpu.extension()
    previous, old_threads = ext.set_isa(name), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        ext.set_isa(previous)
        torch.set_num_threads(old_threads)


def assert_kernel_matches_contract(kernels, a, opts, lengths, config, tol=1e-12):
    """A kernel module's scan_fwd (training and inference) and scan_bwd at ``config`` against the
    float64 contract, options ``opts`` included: every output to ``tol``; padded steps' saved gates
    and d_p zero. Returns ``(hs, saved, (d_p, d_zp, d_yp, d_h0))`` of the kernel."""
    from diru_fast.scan import contract

    T, B, d = a["xp"].shape[0], a["xp"].shape[1], a["h0"].shape[-1]
    hs, saved = kernels.scan_fwd(**a, lengths=lengths, need_saved=True, config=config, **opts)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)
    torch.testing.assert_close(hs, hs_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(saved, saved_ref, rtol=tol, atol=tol)
    hs_inf, saved_inf = kernels.scan_fwd(**a, lengths=lengths, need_saved=False, config=config, **opts)
    assert saved_inf.numel() == 0 and torch.equal(hs_inf, hs)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = (a["w_hh"], a["w_int"], a["w_out"])
    got = kernels.scan_bwd(grad_hs, a["h0"], hs, saved, *weights, lengths, config=config, **opts)
    want = contract.scan_bwd(grad_hs, a["h0"], hs_ref, saved_ref, *weights, lengths, **opts)
    for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")
    if lengths is not None:
        for b, length in enumerate(lengths.tolist()):
            assert torch.all(saved[length:, b] == 0) and torch.all(got[0][length:, b] == 0)
    return hs, saved, got


def assert_kernel_within_twice_torch_error(kernels, a, opts, lengths, config, dtype):
    """A kernel module's hs, dL/dxp (every column of d_p) and dL/dh0 in a low-precision ``dtype``
    within 2x the error of PyTorch's own path in that dtype (the contract run with acc = ``dtype``),
    both against the contract in float64 on the same rounded inputs; ``opts``: the contract's option
    keywords (mask and decay in the accumulation dtype)."""
    from diru_fast.scan import contract

    T, B, d = a["xp"].shape[0], a["xp"].shape[1], a["h0"].shape[-1]
    grad = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(a["xp"].device)
    names = ("w_hh", "w_int", "b_int", "w_out", "b_out")
    hs, saved = kernels.scan_fwd(**a, lengths=lengths, need_saved=True, config=config, **opts)
    d_p, _, _, d_h0 = kernels.scan_bwd(grad.to(dtype), a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"],
                                       lengths, config=config, **opts)

    def contract_run(inputs, options, acc):  # [hs, dL/dxp, dL/dh0] of the contract's autograd
        xp, h0 = (inputs[key].detach().clone().requires_grad_() for key in ("xp", "h0"))
        out = contract.scan_fwd(xp, h0, *(inputs[key] for key in names), lengths, False, **options, acc=acc)[0]
        return [out.detach()] + list(torch.autograd.grad((out.double() * grad).sum(), [xp, h0]))

    low = contract_run(a, opts, dtype)
    ref = contract_run({key: v.double() for key, v in a.items()},
                       {key: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                        for key, v in opts.items()}, torch.float64)
    assert hs.dtype == dtype and d_h0.dtype == dtype
    for name, g, lo, r in zip(("hs", "xp", "h0"), [hs, d_p, d_h0], low, ref):
        err = (g.double() - r).abs().max().item()
        torch_err = (lo.double() - r).abs().max().item()
        slack = 8 * torch.finfo(torch.float32).eps * r.abs().max().item() if dtype == torch.float32 else 1e-6
        assert err <= 2 * torch_err + slack, f"{name}: kernel error {err:.3g} > 2x PyTorch's {torch_err:.3g}"

"""The C++ CPU kernel's float32 code paths, each on every instruction set this machine runs.

float32 has three instruction sets (the packed micro-kernel products on AVX-512 and on AVX2, BLAS
calls elsewhere) and, per call, three ways to run: batch slices with packed weights, batch slices
with the weights as they are (calls of fewer than 8 rows x steps, e.g. one streaming step), and a
column split (a batch smaller than the thread count, d >= 96: every thread computes its share of
each step's output units, three barriers per step). Each combination is checked against the
float64 kernel contract by the float32 rule of test_cpu.py (RMS error at most twice PyTorch's own
float32 error, worst element at most four times), forward and backward, with lengths.
"""

from __future__ import annotations

import pytest
import torch

from diru_fast.providers import cpu
from diru_fast.scan import contract
from tests.helpers import contract_inputs, cpu_isa

HAVE_KERNEL = cpu.unavailable_reason() is None
pytestmark = pytest.mark.skipif(not HAVE_KERNEL, reason=f"C++ CPU kernel unavailable here: {cpu.unavailable_reason()}")
ISAS = cpu.extension().supported_isas() if HAVE_KERNEL else []

# (T, B, d, threads): which path it takes
CASES = {
    "packed-rows": (9, 5, 24, 2),          # T*B >= 8: packed, batch slices (odd rows per slice)
    "packed-tails": (3, 17, 40, 1),        # MR tails, a partial last panel
    "packed-d48": (5, 3, 48, 2),
    "unpacked-step": (1, 3, 48, 2),        # T*B < 8: the weights as they are
    "column-split": (12, 1, 128, 2),       # B < threads, d >= 96
    "column-split-d100": (7, 1, 100, 2),   # units not a multiple of the panel width
    "single-row": (10, 1, 64, 1),          # one row, packed (the one-row multi-panel kernel)
}


def _run(a, lengths, grad, need_saved=True):
    hs, saved = cpu.scan_fwd(a["xp"], a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"], lengths,
                             need_saved)
    if not need_saved:
        return (hs,)
    return (hs, saved) + tuple(cpu.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths))


def _contract(a, lengths, grad):
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    return (hs, saved) + tuple(contract.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths))


NAMES = ("hs", "saved", "d_p", "d_zp", "d_yp", "d_h0")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_float32_paths_meet_the_float32_rule(isa, case, with_lengths):
    T, B, d, threads = CASES[case]
    a64 = contract_inputs(T, B, d, seed=T * 7 + d)
    a32 = {k: v.float() for k, v in a64.items()}
    lengths = torch.tensor([max(1, T - (3 * b) % T) for b in range(B)]) if with_lengths else None
    g64 = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    want = _contract(a64, lengths, g64)
    pytorch32 = _contract(a32, lengths, g64.float())
    with cpu_isa(isa, threads):
        ours = _run(a32, lengths, g64.float())
        again = _run(a32, lengths, g64.float())
        inference = _run(a32, lengths, g64.float(), need_saved=False)
    for name, o, o2, p, w in zip(NAMES, ours, again, pytorch32, want):
        assert o.dtype == torch.float32 and torch.equal(o, o2), f"{name}: not deterministic"
        e_ours, e_torch = o.double() - w, p.double() - w
        rms_ours, rms_torch = e_ours.pow(2).mean().sqrt().item(), e_torch.pow(2).mean().sqrt().item()
        assert rms_ours <= 2 * rms_torch + 1e-12, f"{name}: RMS error {rms_ours:.3g} vs PyTorch float32 {rms_torch:.3g}"
        assert e_ours.abs().max() <= 4 * e_torch.abs().max() + 1e-12, name
    assert torch.equal(inference[0], ours[0])  # an inference forward computes the same states
    if lengths is not None:
        for b, length in enumerate(lengths.tolist()):
            assert torch.all(ours[1][length:, b] == 0) and torch.all(ours[2][length:, b] == 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", ["packed-rows", "unpacked-step", "column-split-d100", "single-row"])
@pytest.mark.parametrize("n", [1, 5])
def test_inference_forward_projecting_x_itself(isa, case, n):
    """scan_fwd_x: each step's input projection inside the time loop, against the contract on
    xp = x W_ih^T + b_ih in float64 (float32 rule), with lengths."""
    T, B, d, threads = CASES[case]
    g = torch.Generator().manual_seed(n + d)
    a64 = contract_inputs(T, B, d, seed=T + d)
    x = torch.randn(T, B, n, dtype=torch.float64, generator=g)
    w_ih = torch.randn(3 * d, n, dtype=torch.float64, generator=g) * n ** -0.5
    b_ih = torch.randn(3 * d, dtype=torch.float64, generator=g) * 0.1
    lengths = torch.tensor([max(1, T - (2 * b) % T) for b in range(B)])
    rest = {k: v for k, v in a64.items() if k != "xp"}
    want = contract.scan_fwd(x @ w_ih.t() + b_ih, lengths=lengths, need_saved=False, **rest)[0]
    pytorch32 = contract.scan_fwd((x @ w_ih.t() + b_ih).float(), lengths=lengths, need_saved=False,
                                  **{k: v.float() for k, v in rest.items()})[0]
    r32 = {k: v.float() for k, v in rest.items()}
    with cpu_isa(isa, threads):
        got = cpu.scan_fwd_x(x.float(), r32["h0"], w_ih.float(), b_ih.float(), r32["w_hh"], r32["w_int"],
                             r32["b_int"], r32["w_out"], r32["b_out"], lengths)
    e_ours, e_torch = got.double() - want, pytorch32.double() - want
    assert e_ours.pow(2).mean().sqrt() <= 2 * e_torch.pow(2).mean().sqrt() + 1e-12
    assert e_ours.abs().max() <= 4 * e_torch.abs().max() + 1e-12
    got64 = cpu.scan_fwd_x(x, a64["h0"], w_ih, b_ih, *(a64[k] for k in ("w_hh", "w_int", "b_int", "w_out", "b_out")),
                           lengths)
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("isa", ISAS)
def test_column_split_equals_batch_slices_to_rounding(isa):
    """The same call split by units (2 threads, B=1) and run on one thread: the same products in
    a different order of panels, so equal up to float32 rounding."""
    T, B, d = 20, 1, 160
    a = {k: v.float() for k, v in contract_inputs(T, B, d, seed=5).items()}
    with cpu_isa(isa, 2):
        split = _run(a, None, None, need_saved=False)[0]
    with cpu_isa(isa, 1):
        single = _run(a, None, None, need_saved=False)[0]
    torch.testing.assert_close(split, single, rtol=0, atol=1e-6)


def test_isa_selection_is_reported_and_checked():
    ext = cpu.extension()
    assert ext.isa() in ISAS and ISAS[-1] == "blas"
    with pytest.raises(RuntimeError, match="unknown instruction set"):
        ext.set_isa("sse9")

"""``python -m diru_fast selftest``: do the backends on this machine compute the right numbers?

Every backend that runs here (:func:`diru_fast.available_backends`, per device), in each dtype it
supports, is compared with the float64 kernel contract (``diru_fast.scan.contract``, the math of
docs/THEORY.md), outputs and gradients:

- **layer**: a 2-layer bidirectional :class:`~diru_fast.DIRULayer` (n=5, d=12, 3 compartments) on a
  batch of 5 sequences of lengths 7, 1, 4, 6, 3 with a given initial state: its output, ``h_n`` and
  the gradients of a random projection of both w.r.t. the input, the state and all 28 parameters;
- **scan** (kernel backends only): one layer's recurrence (``diru_fast.scan.ops.scan``) at sizes
  that reach each of the kernels' size classes (odd B, d a power of two or not; tiny under the
  Triton interpreter, which is slow): ``hs`` and the gradients of all seven inputs, and the
  inference forward (nothing saved) equal bit for bit to the training forward's states;
- **options** (kernel backends, the options each fuses: relu, attention over unequal compartments,
  compartment dropout, time decay, all at once): the same checks with the options on, at a size of
  each regime they take on a GPU (d=48; d=256, where attention runs the per-step kernels);
- **options in the step** (kernel backends that form them there: time decay from ``lambda`` and ``dt``,
  the dropout mask from its seed, what a layer's eager training step runs): the same checks, the
  gradients of ``lambda`` and ``dt`` too, against the contract on the factors and the mask's tensor (on a
  GPU at d=48 only: each case compiles its own kernel variants, within bench/gpu_check.sh's time limit).

Error: the largest absolute difference from the float64 result on the same (rounded) inputs,
divided by the largest magnitude of that result. Tolerance: float64: 1e-10; any other dtype:
2x the error of PyTorch's own path in that dtype (the rule flash-attention's tests use) plus 8 ulp
of float32. PyTorch's own path is the contract run in the dtype (``acc=dtype``) for a scan, and
the prototype's modules (backend "reference") in the dtype for a layer; the reference backend's
own rows in a low-precision dtype are that yardstick, so they are held to 8 eps of the dtype
instead.

One line per device, backend and dtype says pass or FAIL, with the worst error beside its
tolerance; versions come first. :func:`run` returns a :class:`Report`; the command exits 1 on
any failure (``--require NAME`` also fails when backend NAME cannot run).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
import types
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import torch

from . import backends
from .modules import DIRULayer
from .scan import contract, ops

__all__ = ["run", "main", "Report", "Result", "add_arguments"]

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
FLOAT64_TOL = 1e-10
SLACK = 8 * torch.finfo(torch.float32).eps  # 8 ulp of float32, relative to the largest magnitude
YARDSTICK_EPS = 8  # the reference backend's low-precision rows: error <= 8 eps(dtype)

# the layer case: T=7, B=5 (lengths include T and 1), n=5, d=12 (k=3), 2 layers, bidirectional
LAYER = dict(T=7, B=5, n=5, d=12, k=3, layers=2, lengths=(7, 1, 4, 6, 3))
# scan cases (T, B, d): on a GPU each size class of the Triton dispatcher (d=48: resident in 16 bit,
# streamed in fp32, masked; d=100: streamed, masked; d=256 with full 16-row tiles; d=300: per step)
SCAN_GPU = ((9, 17, 48), (5, 16, 100), (4, 32, 256), (3, 5, 300))
SCAN_CPU = ((9, 17, 48), (5, 16, 100))
# the interpreter runs ~50 ms per launch: small, but not so small that the maximum error over a
# few dozen elements stops meaning anything (T=3, B=3, d=20 put one bf16 gradient at 2.04x)
SCAN_INTERPRETER = ((6, 13, 20), (3, 17, 48))
# options cases (T, B, d, compartment sizes): GPU d=48 (resident in 16 bit, streamed in fp32) and d=256
# (attention there runs the per-step kernels); CPU small
OPTIONS_GPU = ((7, 9, 48, (5, 7, 12, 24)), (4, 32, 256, (64, 128, 64)))
OPTIONS_CPU = ((4, 5, 20, (5, 7, 8)),)


@dataclass
class Result:
    """The verdict of one device / backend / dtype."""

    device: str
    backend: str
    dtype: str
    ok: bool
    checks: int = 0  # quantities compared
    worst: str = ""  # the quantity closest to (or over) its tolerance
    error: float = 0.0
    tolerance: float = 0.0
    rule: str = ""
    failure: str = ""  # why it failed ("" when ok)
    seconds: float = 0.0

    def line(self) -> str:
        head = f"{'pass' if self.ok else 'FAIL'}  {self.device:4} {self.backend:9} {self.dtype:8}"
        if self.failure and not self.checks:
            return f"{head}  {self.failure}"
        cmp = "<=" if self.error <= self.tolerance else ">"
        text = (f"{head}  {self.checks:3} checks, worst {self.worst}: error {self.error:.2e} {cmp} "
                f"{self.tolerance:.2e} ({self.rule})  [{self.seconds:.2f} s]")
        return text + (f"\n      why: {self.failure}" if self.failure else "")


@dataclass
class Report:
    versions: Dict[str, str]
    unavailable: Dict[str, str]  # "device/backend" -> why it cannot run
    results: List[Result] = field(default_factory=list)
    required_missing: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and not self.required_missing

    def to_json(self) -> Dict:
        return dict(ok=self.ok, versions=self.versions, unavailable=self.unavailable,
                    required_missing=self.required_missing, results=[asdict(r) for r in self.results])


# ------------------------------------------------------------------ versions

def _first_line(cmd: Sequence[str], pattern: Optional[str] = None) -> Optional[str]:
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout + out.stderr
    if pattern:
        match = re.search(pattern, text)
        return match.group(0) if match else None
    return text.strip().splitlines()[0] if text.strip() else None


def versions() -> Dict[str, str]:
    """What this machine runs: Python, torch, CUDA, cuDNN, GPU, Triton, the compilers."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch.version.cuda": str(torch.version.cuda)}
    if torch.cuda.is_available():
        info["gpu"] = f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})"
        info["gpus"] = str(torch.cuda.device_count())
    else:
        info["gpu"] = "none visible"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["cudnn"] = str(cudnn) if cudnn else "none"
    try:
        from importlib import metadata

        info["triton"] = metadata.version("triton")
    except Exception:  # noqa: BLE001  (PackageNotFoundError, or a broken install)
        info["triton"] = "not installed"
    import os

    if info["triton"] != "not installed" and os.environ.get("TRITON_INTERPRET") == "1":
        info["triton"] += " (TRITON_INTERPRET=1: the interpreter)"
    info["compiler"] = _first_line(["c++", "--version"]) or _first_line(["g++", "--version"]) or "none on PATH"
    info["nvcc"] = _first_line(["nvcc", "--version"], r"release [\d.]+(, V[\d.]+)?") or "none on PATH"
    return info


# ------------------------------------------------------------------ comparisons

def _err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| (NaN -> inf)."""
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if got.shape != ref.shape:
        return float("inf")
    diff = (got - ref).abs().max().item() if got.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    value = diff / scale if scale > 0 else diff
    return float("inf") if value != value else value  # NaN


class _Tally:
    """The worst quantity of one device / backend / dtype, by error / tolerance."""

    def __init__(self):
        self.checks, self.worst, self.failures = 0, None, []

    def add(self, name: str, error: float, tolerance: float, rule: str) -> None:
        self.checks += 1
        ratio = error / tolerance if tolerance > 0 else (0.0 if error == 0 else float("inf"))
        if self.worst is None or ratio > self.worst[0]:
            self.worst = (ratio, name, error, tolerance, rule)
        if not error <= tolerance:
            self.failures.append(f"{name}: error {error:.2e} > {tolerance:.2e} ({rule})")


def _rule(dtype: torch.dtype, yardstick: Optional[float], is_yardstick: bool = False) -> Tuple[float, str]:
    if dtype == torch.float64:
        return FLOAT64_TOL, "float64"
    if is_yardstick:
        eps = torch.finfo(dtype).eps
        return YARDSTICK_EPS * eps, f"{YARDSTICK_EPS} eps of {str(dtype)[6:]}: this is the yardstick"
    return 2 * yardstick + SLACK, f"2 x PyTorch's {yardstick:.2e} + 8 ulp"


# ------------------------------------------------------------------ the layer case

def _layer_params(generator: torch.Generator) -> Dict[str, torch.Tensor]:
    c = LAYER
    model = DIRULayer(c["n"], c["d"], c["layers"], bidirectional=True, num_compartments=c["k"],
                      dtype=torch.float64, backend="torch")
    return {name: torch.randn(p.shape, generator=generator, dtype=torch.float64) * p.shape[-1] ** -0.5
            for name, p in model.named_parameters()}


def _layer_run(params, x, hx, lengths, proj, proj_h, backend: str, device: str, dtype: torch.dtype):
    """(names, values): output, h_n and the gradients of <output, proj> + <h_n, proj_h>."""
    c = LAYER
    model = DIRULayer(c["n"], c["d"], c["layers"], bidirectional=True, num_compartments=c["k"],
                      dtype=dtype, device=device, backend=backend)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    xin = x.to(device=device, dtype=dtype).requires_grad_()
    h0 = hx.to(device=device, dtype=dtype).requires_grad_()
    out, h_n = model(xin, h0, lengths=lengths.to(device))
    loss = (out.double() * proj.to(device)).sum() + (h_n.double() * proj_h.to(device)).sum()
    names = ["output", "h_n", "grad input", "grad hx"] + [f"grad {n}" for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, [xin, h0] + list(model.parameters()))
    return names, [out, h_n, *grads]


def _round(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).to(torch.float64)


def check_layer(tally: _Tally, backend: str, device: str, dtype: torch.dtype, seed: int = 0) -> None:
    c = LAYER
    g = torch.Generator().manual_seed(seed)
    params = {k: _round(v, dtype) for k, v in _layer_params(g).items()}
    x = _round(torch.randn(c["T"], c["B"], c["n"], generator=g, dtype=torch.float64), dtype)
    hx = _round(torch.randn(2 * c["layers"], c["B"], c["d"], generator=g, dtype=torch.float64) * 0.5, dtype)
    lengths = torch.tensor(c["lengths"])
    proj = torch.randn(c["T"], c["B"], 2 * c["d"], generator=g, dtype=torch.float64)
    proj_h = torch.randn(2 * c["layers"], c["B"], c["d"], generator=g, dtype=torch.float64)
    args = (params, x, hx, lengths, proj, proj_h)
    names, ref = _layer_run(*args, "torch", "cpu", torch.float64)
    _, got = _layer_run(*args, backend, device, dtype)
    yard = None
    if dtype != torch.float64 and backend != "reference":
        _, yard = _layer_run(*args, "reference", device, dtype)
    for i, name in enumerate(names):
        tol, rule = _rule(dtype, None if yard is None else _err(yard[i], ref[i]), backend == "reference")
        tally.add(f"layer {name}", _err(got[i], ref[i]), tol, rule)


# ------------------------------------------------------------------ the scan case

def _scan_inputs(T: int, B: int, d: int, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    scale = d ** -0.5
    return dict(xp=r(T, B, 3 * d), h0=r(B, d) * 0.5, w_hh=r(3 * d, d) * scale, w_int=r(d, d) * scale,
                b_int=r(d) * 0.1, w_out=r(d, d) * scale, b_out=r(d) * 0.1)


def _scan_grads(fn: Callable, inputs: Dict[str, torch.Tensor], lengths, grad):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    hs = fn(leaves, lengths)
    grads = torch.autograd.grad((hs.double() * grad).sum(), list(leaves.values()))
    return [hs, *grads]


def _option_inputs(T: int, B: int, d: int, sizes: Sequence[int], fused, seed: int):
    """(inputs with k attention columns, option keywords) of the options ``fused`` runs: relu, attention
    over compartments of ``sizes``, a dropout mask (p = 0.25, in float64: cast per dtype), decay factors
    in [0.2, 1]."""
    g = torch.Generator().manual_seed(seed)
    k = len(sizes) if "attention" in fused else 0
    base = _scan_inputs(T, B, d, seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if k:
        base["xp"] = torch.cat([base["xp"], r(T, B, k)], -1)
        base["w_hh"] = torch.cat([base["w_hh"], r(k, d) * d ** -0.5])
    opts = dict(activation="relu" if "relu" in fused else "tanh",
                compartment_of=torch.repeat_interleave(torch.arange(k), torch.tensor(sizes)) if k else None,
                mask=(torch.rand(T, B, d, generator=g, dtype=torch.float64) >= 0.25) / 0.75
                if "dropout" in fused else None,
                decay=0.2 + 0.8 * torch.rand(T, B, d, generator=g, dtype=torch.float64)
                if "time_decay" in fused else None)
    return base, opts


def check_scan(tally: _Tally, backend: str, device: str, dtype: torch.dtype, shapes, options=False) -> None:
    """``options``: ``shapes`` are (T, B, d, compartment sizes) and every option the backend fuses is on."""
    fused = backends.provider_options(backend) if options else frozenset()
    if options and not fused:
        return
    for shape in shapes:
        T, B, d = shape[:3]
        tag = f"scan T{T} B{B} d{d}" + (f" options {'+'.join(sorted(fused))}" if options else "")
        if options:
            base, opts64 = _option_inputs(T, B, d, shape[3], fused, seed=T * B + d)
        else:
            base, opts64 = _scan_inputs(T, B, d, seed=T * B + d), {}
        acc = contract.acc_dtype(dtype)
        opts = {key: v.to(device=device, dtype=acc if v.is_floating_point() else v.dtype)
                if isinstance(v, torch.Tensor) else v for key, v in opts64.items()}
        opts_ref = {key: v.to(acc) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                    for key, v in opts64.items()}
        lengths = torch.tensor([max(1, T - (7 * b) % T) for b in range(B)])
        grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
        rounded = {k: _round(v, dtype) for k, v in base.items()}
        on_device = {k: v.to(device=device, dtype=dtype) for k, v in rounded.items()}
        dev_lengths, dev_grad = lengths.to(device), grad.to(device)
        names = ["hs"] + [f"grad {k}" for k in base]

        def kernel(w, lens):
            return ops.scan(*w.values(), lens, backend, **opts)

        def contract_in(w, lens, o):  # PyTorch's own path in the inputs' dtype
            return contract.scan_fwd(*w.values(), lens, False, **o, acc=w["xp"].dtype)[0]

        ref = _scan_grads(lambda w, lens: contract_in(w, lens, {key: v.double() if isinstance(v, torch.Tensor)
                                                                 and v.is_floating_point() else v
                                                                 for key, v in opts_ref.items()}),
                          rounded, lengths, grad)
        got = _scan_grads(kernel, on_device, dev_lengths, dev_grad)
        yard = None if dtype == torch.float64 else _scan_grads(lambda w, lens: contract_in(w, lens, opts), on_device,
                                                               dev_lengths, dev_grad)
        for i, name in enumerate(names):
            tol, rule = _rule(dtype, None if yard is None else _err(yard[i], ref[i]))
            tally.add(f"{tag} {name}", _err(got[i], ref[i]), tol, rule)
        provider = backends.get_provider(backend)
        with torch.no_grad():  # inference keeps nothing, and must give the same states bit for bit
            w = [v.contiguous() for v in on_device.values()]
            hs_train = provider.scan_fwd(*w, dev_lengths, True, **opts)[0]
            hs_infer = provider.scan_fwd(*w, dev_lengths, False, **opts)[0]
        same = hs_train.shape == hs_infer.shape and torch.equal(hs_train, hs_infer)
        tally.add(f"{tag} inference hs == training hs", 0.0 if same else float("inf"), 0.0, "bit for bit")


# ------------------------------------------------------------------ driver

def check_in_step(tally: _Tally, backend: str, device: str, dtype: torch.dtype, shapes) -> None:
    """The options formed inside the kernels' step (providers with ``STEP_OPTIONS``): every option the
    backend fuses, time decay as ``lambda [d]`` and ``dt [T, B]`` (0 on padded steps) and the dropout mask
    as its seed (p = 0.25); ``hs`` and the gradients of the seven inputs, lambda and dt."""
    from .scan.dropout import CompartmentMask

    fused = backends.provider_options(backend)
    if not getattr(backends.get_provider(backend), "STEP_OPTIONS", False) or not {"dropout", "time_decay"} <= fused:
        return
    for T, B, d, sizes in shapes:
        tag = f"scan T{T} B{B} d{d} options in the step {'+'.join(sorted(fused))}"
        seed = T * B + d + 1
        base, opts64 = _option_inputs(T, B, d, sizes, fused - {"dropout", "time_decay"}, seed=seed)
        g = torch.Generator().manual_seed(seed)
        lengths = torch.tensor([max(1, T - (7 * b) % T) for b in range(B)])
        base["decay_rate"] = torch.randn(d, generator=g, dtype=torch.float64)
        base["dt"] = (torch.rand(T, B, generator=g, dtype=torch.float64) * 2).masked_fill(
            torch.arange(T)[:, None] >= lengths[None, :], 0.0)
        bits = int(torch.randint(0, 2 ** 62, (), generator=g))
        acc = contract.acc_dtype(dtype)

        def mask(dt, dev):
            return CompartmentMask(torch.tensor(bits), 0.25, (T, B, d), dt, torch.device(dev))

        grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
        rounded = {k: _round(v, dtype) for k, v in base.items()}
        on_device = {k: v.to(device=device, dtype=dtype) for k, v in rounded.items()}
        comp = opts64["compartment_of"]
        dev_opts = dict(activation=opts64["activation"], compartment_of=None if comp is None else comp.to(device))
        dev_lengths, dev_grad = lengths.to(device), grad.to(device)
        names = ["hs"] + [f"grad {k}" for k in base]

        def kernel(w, lens):
            return ops.scan(*(w[k] for k in list(w)[:7]), lens, backend, **dev_opts, mask=mask(acc, device),
                            decay_rate=w["decay_rate"], dt=w["dt"])

        def contract_in(w, lens, opts, mask_dtype):  # the contract on the factors and the mask's tensor
            decay = contract.decay_factor(w["decay_rate"], w["dt"])
            return contract.scan_fwd(*(w[k] for k in list(w)[:7]), lens, False, **opts,
                                     mask=mask(mask_dtype, w["xp"].device).tensor(), decay=decay,
                                     acc=w["xp"].dtype)[0]

        ref = _scan_grads(lambda w, lens: contract_in(w, lens, dict(activation=opts64["activation"],
                                                                     compartment_of=comp), torch.float64),
                          rounded, lengths, grad)
        got = _scan_grads(kernel, on_device, dev_lengths, dev_grad)
        yard = None if dtype == torch.float64 else _scan_grads(
            lambda w, lens: contract_in(w, lens, dev_opts, dtype), on_device, dev_lengths, dev_grad)
        for i, name in enumerate(names):
            tol, rule = _rule(dtype, None if yard is None else _err(yard[i], ref[i]))
            tally.add(f"{tag} {name}", _err(got[i], ref[i]), tol, rule)


def _devices(requested: Optional[Sequence[str]]) -> List[str]:
    found = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [d for d in found if requested is None or d in requested]


def _interpreted_triton() -> bool:
    try:
        import importlib

        return bool(importlib.import_module("diru_fast.kernels").INTERPRETED)
    except Exception:  # noqa: BLE001
        return False


def _scan_shapes(backend: str, device: str) -> Tuple[Tuple[int, int, int], ...]:
    if backend not in backends.KERNEL_BACKENDS:
        return ()
    if device == "cuda":
        return SCAN_GPU
    return SCAN_INTERPRETER if backend == "triton" else SCAN_CPU


def run(devices: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
        require: Sequence[str] = (), out: Optional[TextIO] = None,
        dtypes: Optional[Sequence[str]] = None, jobs: int = 1) -> Report:
    """Run the self test; print as it goes to ``out`` (default stdout); return the :class:`Report`.

    ``devices``: "cpu" and/or "cuda" (default: every device here); ``only``: the backends to test
    (default: all that run); ``require``: backends that must run (their absence is a failure);
    ``dtypes``: dtype names to test (default: every one a backend supports); ``jobs``: check that
    many device/backend/dtype combinations at once, each in its own process (on a GPU the Triton
    backend compiles its kernels on first use, ~35 per dtype at about a second each: in parallel
    the first run's compile time is that of one dtype). The results are printed in the same order.
    """
    out = out if out is not None else sys.stdout
    say = lambda text="": print(text, file=out, flush=True)  # noqa: E731
    report = Report(versions=versions(), unavailable={})
    say("diru_fast selftest: each backend that runs here against the float64 kernel contract (docs/THEORY.md)")
    say(" | ".join(f"{k} {v}" for k, v in report.versions.items()))
    say(f"rule: error = max|got - float64| / max|float64| on the same rounded inputs; tolerance: float64 "
        f"{FLOAT64_TOL:g}, other dtypes 2 x PyTorch's own error in that dtype + 8 ulp of float32")
    names = [b for b in backends.BACKENDS if b != "auto" and (only is None or b in only)]
    combos = []  # (backend, device, dtype), in the report's order
    for device in _devices(devices):
        for name in names:
            reason = backends.why_unavailable(name, device)
            if reason is not None:
                report.unavailable[f"{device}/{name}"] = reason
                say(f"----  {device:4} {name:9} {'-':8}  cannot run here: {reason}")
                continue
            combos += [(name, device, dtype) for dtype in DTYPES
                       if (dtypes is None or str(dtype)[6:] in dtypes)
                       and backends.why_unavailable(name, device, dtype) is None]
    for result in _check_all(combos, jobs):
        report.results.append(result)
        say(result.line())
    ran = {r.backend for r in report.results}
    report.required_missing = [b for b in require if b not in ran]
    for b in report.required_missing:
        why = "; ".join(f"{k}: {v}" for k, v in report.unavailable.items() if k.endswith("/" + b)) or "not tested"
        say(f"FAIL  required backend {b!r} did not run: {why}")
    failed = [r for r in report.results if not r.ok]
    say(f"selftest {'passed' if report.ok else 'FAILED'}: {len(report.results) - len(failed)} of "
        f"{len(report.results)} backend/dtype combinations pass" +
        (f"; required but missing: {', '.join(report.required_missing)}" if report.required_missing else ""))
    return report


def _check_all(combos: Sequence[Tuple[str, str, torch.dtype]], jobs: int):
    """Each combination's :class:`Result`, in order: here one after another, or with ``jobs`` > 1 in
    that many fresh processes at once (spawned: CUDA cannot be forked), yielded in order as they end."""
    if jobs <= 1 or len(combos) <= 1:
        for combo in combos:
            yield _check_one(*combo)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(combos)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_check_one, *combo) for combo in combos]
        for (backend, device, dtype), future in zip(combos, futures):
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001  (the worker died: a failure of this combination)
                yield Result(device=device, backend=backend, dtype=str(dtype).replace("torch.", ""), ok=False,
                             failure=f"its worker process failed: {type(exc).__name__}: {exc}")


def _check_one(backend: str, device: str, dtype: torch.dtype) -> Result:
    name = str(dtype).replace("torch.", "")
    tally = _Tally()
    start = time.perf_counter()
    failure = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallback notes etc.: the verdict is the numbers
            check_layer(tally, backend, device, dtype)
            check_scan(tally, backend, device, dtype, _scan_shapes(backend, device))
            if backend in backends.KERNEL_BACKENDS:
                check_scan(tally, backend, device, dtype, OPTIONS_GPU if device == "cuda" else OPTIONS_CPU,
                           options=True)
                check_in_step(tally, backend, device, dtype, OPTIONS_GPU[:1] if device == "cuda" else OPTIONS_CPU)
        if device == "cuda":
            torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001  (a crash is a failure with its reason, not a traceback)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        failure = f"raised {type(exc).__name__}: {message} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
    seconds = time.perf_counter() - start
    if tally.failures and not failure:
        failure = "; ".join(tally.failures[:3]) + (f"; and {len(tally.failures) - 3} more"
                                                   if len(tally.failures) > 3 else "")
    worst = tally.worst or (0.0, "", 0.0, 0.0, "")
    return Result(device=device, backend=backend, dtype=name, ok=not failure and tally.checks > 0,
                  checks=tally.checks, worst=worst[1], error=worst[2], tolerance=worst[3], rule=worst[4],
                  failure=failure or ("" if tally.checks else "nothing was checked"), seconds=seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"),
                        help="test only this device (repeatable); none given: every device here")
    parser.add_argument("--backend", action="append", choices=[b for b in backends.BACKENDS if b != "auto"],
                        help="test only this backend (repeatable); none given: every backend that runs")
    parser.add_argument("--dtype", action="append", choices=[str(d)[6:] for d in DTYPES],
                        help="test only this dtype (repeatable); none given: every dtype a backend supports")
    parser.add_argument("--require", action="append", default=[], metavar="BACKEND",
                        help="fail if this backend cannot run here (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="check N device/backend/dtype combinations at once, each in its own process "
                             "(on a GPU the Triton kernels then compile in parallel)")


def main(args: argparse.Namespace) -> int:
    report = run(devices=args.device, only=args.backend, require=args.require, dtypes=args.dtype, jobs=args.jobs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
    return 0 if report.ok else 1


class _CallableModule(types.ModuleType):
    """``diru_fast.selftest(...)`` is :func:`run`: the package attribute ``selftest`` is this module
    once it is imported (``python -m diru_fast selftest`` imports it), so the module itself is
    made callable rather than shadowed by, or shadowing, a function of the same name."""

    def __call__(self, devices: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
                 require: Sequence[str] = (), out: Optional[TextIO] = None,
                 dtypes: Optional[Sequence[str]] = None, jobs: int = 1) -> Report:
        return run(devices, only, require, out, dtypes, jobs)


sys.modules[__name__].__class__ = _CallableModule

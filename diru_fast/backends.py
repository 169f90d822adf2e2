"""Backend names, what runs here, and which backend a call gets.

Backends:

==============  =====================================================================
``"triton"``    persistent Triton kernels; CUDA tensors (CPU tensors under TRITON_INTERPRET=1)
``"cuda"``      the CUDA C++ extension; CUDA tensors
``"cpu"``       the fused C++ CPU extension; CPU tensors, float32 / float64
``"torch"``     vectorized pure PyTorch (autograd); any device and dtype
``"reference"`` the prototype's cell stepped in time, compartment by compartment; any device and dtype
``"auto"``      CUDA: triton, then cuda, then torch; CPU: cpu, then torch.
                ``DIRU_FAST_BACKEND`` overrides it (and then counts as asked for explicitly).
==============  =====================================================================

An explicitly requested backend that cannot run raises :class:`BackendUnavailableError`
saying why and how to fix it. The same holds for the options (``activation="relu"``, attention,
compartment dropout; docs/THEORY.md §1.2–1.6): a kernel provider runs a call only if its ``OPTIONS``
list every option the call uses. Else ``"auto"`` falls back to ``"torch"`` (one warning naming the
option and the backend) and an explicit backend raises, naming the option. ``"auto"`` never falls back silently: the first time it has to
pass over a fused backend for a (device, dtype) it warns once, naming the reason.

The compiled backends ("triton", "cuda", "cpu") are *kernel providers*: modules in
``diru_fast.providers`` that implement the kernel contract (``diru_fast.scan.contract``)
and expose::

    unavailable_reason() -> str | None            # None: importable/built and usable here
    unsupported_reason(device, dtype) -> str | None
    FIX: str                                      # what the user runs to get it
    scan_fwd(...), scan_bwd(...)                  # the contract's two functions
    cell_step(...)                                # optional: one inference step in one call
    scan_fwd_x(...)                               # optional: an inference forward that projects x itself
    OPTIONS: frozenset                            # the options its kernels fuse (absent: none)
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import Dict, FrozenSet, List, Optional, Tuple, Union

import torch

__all__ = [
    "BACKENDS",
    "KERNEL_BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "resolve_backend",
    "get_provider",
    "why_unavailable",
    "check_backend_name",
]

BACKENDS: Tuple[str, ...] = ("auto", "triton", "cuda", "cpu", "torch", "reference")
KERNEL_BACKENDS: Tuple[str, ...] = ("triton", "cuda", "cpu")
ENV_VAR = "DIRU_FAST_BACKEND"

# Provider modules by backend name (more only through _register_provider, which the tests use).
_PROVIDER_MODULES: Dict[str, str] = {
    "triton": "diru_fast.providers.triton",
    "cuda": "diru_fast.providers.cuda",
    "cpu": "diru_fast.providers.cpu",
}

_AUTO_ORDER: Dict[str, Tuple[str, ...]] = {"cuda": ("triton", "cuda"), "cpu": ("cpu",)}

_warned: set = set()
_provider_cache: Dict[str, Union[ModuleType, str]] = {}


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run for these inputs on this machine."""


def get_provider(name: str) -> ModuleType:
    """The kernel provider module for ``name``; raises BackendUnavailableError if it cannot load."""
    reason = _load_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return _provider_cache[name]  # type: ignore[return-value]


def _load_reason(name: str) -> Optional[str]:
    """Import (once) the provider module of ``name``; None on success, else why not."""
    if name not in _PROVIDER_MODULES:
        raise ValueError(f"unknown kernel provider {name!r}")
    cached = _provider_cache.get(name)
    if cached is None:
        try:
            module = importlib.import_module(_PROVIDER_MODULES[name])
        except ImportError as exc:  # missing dependency or a provider not part of this build
            cached = f"its module could not be imported ({exc})"
        else:
            reason = module.unavailable_reason()
            cached = module if reason is None else f"{reason}. Fix: {module.FIX}"
        _provider_cache[name] = cached
    return cached if isinstance(cached, str) else None


def _register_provider(name: str, module: str) -> None:
    """Make ``backend=name`` run the kernel provider ``module`` (an import path). Not public: the
    tests register the plain-PyTorch statement of the kernel contract this way, to exercise the
    custom ops and the autograd formula without a compiled kernel."""
    _PROVIDER_MODULES[name] = module
    _provider_cache.pop(name, None)


def _known(name: object) -> bool:
    return isinstance(name, str) and (name in BACKENDS or name in _PROVIDER_MODULES)


def check_backend_name(name: object) -> str:
    """Return ``name`` if it names a backend; else raise ValueError listing the choices."""
    if not _known(name):
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name  # type: ignore[return-value]


def why_unavailable(name: str, device: Union[str, torch.device, None] = None,
                    dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """None if backend ``name`` runs for tensors on ``device`` of ``dtype``; else the reason."""
    check_backend_name(name)
    if name == "auto":
        raise ValueError("why_unavailable() takes a concrete backend, not 'auto'")
    if name in ("torch", "reference"):
        return None
    reason = _load_reason(name)
    if reason is not None or device is None:
        return reason
    module = _provider_cache[name]
    return module.unsupported_reason(torch.device(device), dtype)  # type: ignore[union-attr]


def available_backends(device: Union[str, torch.device, None] = None) -> List[str]:
    """The backends that run here (for tensors on ``device`` when given), fastest first."""
    names = [b for b in BACKENDS if b != "auto"]
    if device is None:
        return [b for b in names if why_unavailable(b) is None
                and (b not in KERNEL_BACKENDS or _runs_on_some_device(b))]
    return [b for b in names if why_unavailable(b, device) is None]


def _runs_on_some_device(name: str) -> bool:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return any(why_unavailable(name, dev) is None for dev in devices)


def _warn_once(key: tuple, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside diru_fast and torch, so warnings point at user code."""
    skip = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (sys.modules[__package__], torch))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def _constant_under_compile(fn):
    """``torch.compiler.assume_constant_result`` without importing torch._dynamo (a second of import
    time): the decorator only sets this attribute, which Dynamo reads when it traces a call."""
    fn._dynamo_marked_constant = True
    return fn


def provider_options(name: str) -> FrozenSet[str]:
    """The options backend ``name`` runs: all of them on "torch" / "reference", else its
    provider's ``OPTIONS``."""
    if name in ("torch", "reference"):
        return frozenset({"relu", "attention", "dropout"})
    return getattr(get_provider(name), "OPTIONS", frozenset())


@_constant_under_compile
def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype,
                    options: FrozenSet[str] = frozenset()) -> str:
    """The backend a call with these inputs runs on (see the module docstring for the rules);
    ``options``: those the call uses (:func:`diru_fast.providers.options_in_use`)."""
    name, explicit = _resolve(backend, device, dtype)
    if not options or name in ("torch", "reference"):
        return name
    missing = options - provider_options(name)
    if not missing:
        return name
    what = ", ".join(repr(o) for o in sorted(missing))
    if explicit:
        raise BackendUnavailableError(
            f"backend {name!r} does not fuse the option(s) {what}: its kernels run the plain cell only. "
            f"Use backend='auto' (falls back to 'torch' for these options) or backend='torch'.")
    _warn_once((torch.device(device).type, dtype, name, frozenset(missing)),
               f"diru_fast: backend 'auto' uses 'torch' (the slower pure-PyTorch path) instead of {name!r}, "
               f"whose kernels do not fuse the option(s) {what}. This warning is shown once.")
    return "torch"


def _resolve(backend: str, device: torch.device, dtype: torch.dtype) -> Tuple[str, bool]:
    """``(the backend, whether it was asked for explicitly)``, options aside."""
    check_backend_name(backend)
    source = "backend="
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            if not _known(env):
                raise ValueError(f"{ENV_VAR}={env!r} is not a backend; choose one of {', '.join(BACKENDS)}")
            backend, source = env, f"{ENV_VAR}="
    device = torch.device(device)
    if backend != "auto":
        reason = why_unavailable(backend, device, dtype)
        if reason is not None:
            raise BackendUnavailableError(
                f"{source}{backend!r} cannot run on {device.type} tensors of {dtype}: {reason}. "
                f"Use backend='auto' to fall back, or one of {available_backends(device)}."
            )
        return backend, True
    reasons = []
    for name in _AUTO_ORDER.get(device.type, ()):
        reason = why_unavailable(name, device, dtype)
        if reason is None:
            if reasons:
                _warn_once((device.type, dtype, name), _fallback_message(device, dtype, reasons, name))
            return name, False
        reasons.append((name, reason))
    if reasons:  # a fused kernel exists for this device kind, but not here / not for this dtype
        _warn_once((device.type, dtype, "torch"), _fallback_message(device, dtype, reasons, "torch"))
    return "torch", False


def _fallback_message(device: torch.device, dtype: torch.dtype, reasons: list, chosen: str) -> str:
    passed = "; ".join(f"{name!r}: {reason}" for name, reason in reasons)
    slow = " (the slower pure-PyTorch path)" if chosen == "torch" else ""
    return (f"diru_fast: backend 'auto' uses {chosen!r}{slow} for {device.type} tensors of {dtype}, "
            f"passing over {passed}. This warning is shown once.")


def _reset_for_tests() -> None:
    """Forget loaded providers and issued warnings (tests simulate missing backends)."""
    _warned.clear()
    _provider_cache.clear()

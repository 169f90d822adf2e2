"""Input checks shared by the functional ops and modules: clear errors, not crashes.

Bad inputs raise :class:`InvalidInputError`, which is both a ``ValueError`` and a ``RuntimeError``
(PyTorch's recurrent modules raise ``RuntimeError`` for bad shapes and ``ValueError`` for bad dtypes,
so code written for either keeps catching them); a dtype problem is also a ``TypeError``.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["InvalidInputError", "InvalidInputTypeError"]


class InvalidInputError(ValueError, RuntimeError):
    """An input of the wrong shape, size or value (a ValueError and a RuntimeError)."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """An input of the wrong dtype (also a TypeError)."""


def check_input(x: object, name: str, ranks: Sequence[int]) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ranks:
        wanted = " or ".join(f"{r}-D" for r in ranks)
        raise InvalidInputError(f"{name} must be {wanted}, got a {x.dim()}-D tensor of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InvalidInputTypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def check_matches_params(x: Tensor, name: str, param: Tensor) -> None:
    """``x`` must share the parameters' dtype and device."""
    if x.device != param.device:
        raise InvalidInputError(
            f"{name} is on {x.device} but the parameters are on {param.device}; "
            f"move one of them (e.g. model.to({str(x.device)!r}))"
        )
    if x.dtype != param.dtype:
        raise InvalidInputTypeError(
            f"{name} has dtype {x.dtype} but the parameters have dtype {param.dtype}; "
            f"convert one of them (e.g. model.to({x.dtype}) or x.to({param.dtype}))"
        )


def check_feature_size(x: Tensor, name: str, expected: int) -> None:
    if x.shape[-1] != expected:
        raise InvalidInputError(
            f"{name} has {x.shape[-1]} features in its last dimension, but the layer expects "
            f"input_size={expected} (shape {tuple(x.shape)})"
        )


def check_state(h: Optional[Tensor], name: str, shape: Sequence[int], like: Tensor) -> None:
    if h is None:
        return
    if not isinstance(h, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(h).__name__}")
    if tuple(h.shape) != tuple(shape):
        raise InvalidInputError(f"{name} must have shape {tuple(shape)}, got {tuple(h.shape)}")
    check_matches_params(h, name, like)


def check_lengths(lengths: Union[Tensor, Sequence[int], None], steps: int, batch: int,
                  device: torch.device) -> Optional[Tensor]:
    """Validate per-sequence lengths; return them as an int64 tensor on ``device``."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"lengths must be a 1-D integer tensor or a list of ints ({exc})") from exc
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise InvalidInputTypeError(f"lengths must hold integers, got {lengths.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise InvalidInputError(f"lengths must have shape ({batch},) (one per sequence), got {tuple(lengths.shape)}")
    if batch > 0 and not values_readable(lengths):
        # Reading the values would break the graph: the check runs inside it instead (an error
        # when the compiled code runs, without the values in the message). T stays out of the
        # message too: formatting a dynamic T would fix it in the graph (one graph per length).
        # Under vmap over the lengths there is no check to run (see values_readable).
        if torch.compiler.is_compiling():
            torch._assert_async(((lengths >= 1) & (lengths <= steps)).all(),
                                "lengths must lie in [1, T] (T: the padded sequence length)")
    elif batch > 0:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > steps:
            raise InvalidInputError(f"lengths must lie in [1, {steps}] (the padded sequence length), "
                                    f"got values in [{low}, {high}]")
    return lengths.to(device=device, dtype=torch.int64)


def values_readable(t: Tensor) -> bool:
    """Whether a check may read ``t``'s values in Python (``bool(...)``, ``int(...)``): not while
    ``torch.compile`` or ``torch.export`` traces (fake tensors; reading would break the graph), and
    not for a tensor batched by ``torch.func.vmap`` (or the older vmap of
    ``jacobian(vectorize=True)``), whose values are one per sample. Under ``grad`` / ``jvp`` alone
    the values are readable."""
    if torch.compiler.is_compiling():
        return False
    functorch = torch._C._functorch
    while True:
        if functorch.is_batchedtensor(t) or functorch.is_legacy_batchedtensor(t):
            return False
        if not functorch.is_functorch_wrapped_tensor(t):
            break
        t = functorch.get_unwrapped(t)
    return not (torch._is_functional_tensor(t) or isinstance(t, torch._subclasses.FakeTensor))


def check_dt(dt: object, shape: Sequence[int], like: Tensor, live: Optional[Tensor] = None) -> Tensor:
    """Validate time decay's ``dt`` (the time since each step's previous observation): a real tensor
    of ``shape`` on ``like``'s device, finite and >= 0 where ``live`` (a bool mask of ``shape``, None:
    everywhere; padded steps are not read). Returns it converted to ``like``'s floating dtype: an
    integer, float16 or float32 ``dt`` on a float64 model is converted (exactly; a float64 ``dt`` on
    a float32 model is rounded to float32, as the model computes in float32), a bool or complex one
    is refused.

    Where the values cannot be read (see :func:`values_readable`): traced, the check runs inside the
    graph (``torch._assert_async``); under ``torch.func.vmap`` it cannot raise, so an invalid gap is
    replaced by NaN, which reaches that sample's outputs instead of a silently wrong number."""
    if not isinstance(dt, Tensor):
        raise InvalidInputTypeError(f"dt must be a torch.Tensor, got {type(dt).__name__}")
    if dt.is_complex() or dt.dtype == torch.bool:
        raise InvalidInputTypeError(f"dt must hold real numbers, got {dt.dtype}")
    if tuple(dt.shape) != tuple(shape):
        raise InvalidInputError(f"dt must have shape {tuple(shape)} (one gap per step and sequence), "
                                f"got {tuple(dt.shape)}")
    if dt.device != like.device:
        raise InvalidInputError(f"dt is on {dt.device} but the input is on {like.device}")
    dt = dt.to(like.dtype)
    ok = torch.isfinite(dt) & (dt >= 0)
    if live is not None:
        ok = ok | ~live
    if torch.compiler.is_compiling():  # reading the values would break the graph
        torch._assert_async(ok.all(), "dt must be finite and >= 0")
    elif not values_readable(dt) or not values_readable(ok):
        dt = torch.where(ok, dt, torch.full_like(dt, float("nan")))
    elif dt.numel() and not bool(ok.all()):
        raise InvalidInputError("dt must be finite and >= 0 (the time since the previous observation)")
    return dt


def check_finite(x: Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN/Inf; traced, the check runs in the graph; under vmap, NaN/Inf simply
    propagate to the affected sample's outputs (see :func:`values_readable`)."""
    if torch.compiler.is_compiling():
        torch._assert_async(torch.isfinite(x).all(), f"{name} contains NaN or Inf (check_finite=True)")
    elif values_readable(x) and not bool(torch.isfinite(x).all()):
        raise InvalidInputError(f"{name} contains NaN or Inf (check_finite=True)")


def as_int(value: object) -> Optional[int]:
    """``value`` as a Python int if it is an integer (a Python or NumPy one; not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def as_real(value: object) -> Optional[float]:
    """``value`` as a Python float if it is a real number (a Python or NumPy one; not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """A module size: an int, Python or NumPy (TypeError otherwise), of at least ``minimum``
    (ValueError); returned as a Python int."""
    number = as_int(value)
    if number is None:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if number < minimum:
        raise ValueError(f"{name} must be {'positive' if minimum == 1 else f'>= {minimum}'}, got {number}")
    return number


def check_bool(name: str, value: object) -> bool:
    """A module flag: a bool (``batch_first="False"`` would otherwise read as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_dropout(value: object) -> float:
    """A probability in [0, 1] (Python or NumPy number), returned as a Python float."""
    p = as_real(value)
    if p is None or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout must be a number in [0, 1], got {value!r}")
    return p

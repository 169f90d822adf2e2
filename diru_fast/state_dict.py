"""Checkpoint formats: the prototype's per-compartment keys and the fast modules' fused parameters.

The fast modules hold each cell's parameters as the seven fused tensors of
:mod:`diru_fast.weights`. Checkpoints written by the prototype (and by ``diru_fast.reference``, and
by release 0.1 of the fast modules) hold them as per-compartment keys. Every fast module *loads*
both; :class:`~diru_fast.DIRU`, the prototype's own model, also *writes* the prototype's keys, so
its checkpoints stay loadable by the prototype. The helpers here are wired into the modules'
``state_dict`` hooks:

- :class:`PrototypeKeys` describes where one cell's prototype keys sit (``src``, relative to the
  module) and which parameters they become (``dst``);
- :func:`install_prototype_loading` makes a module's ``load_state_dict`` accept them: strict
  loading still names every missing, unexpected and mis-shaped key, by its name in the file;
- :func:`write_prototype_keys` rewrites a state dict's fused keys into the prototype's.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .weights import ROLES, CellWeights, from_prototype, prototype_shapes, to_prototype

__all__ = ["PrototypeKeys", "cell_keys", "install_prototype_loading", "install_prototype_writing",
           "write_prototype_keys"]


class PrototypeKeys(NamedTuple):
    """One cell: its prototype keys start with ``src``; they become the parameters ``dst[role]``
    (keys relative to the module holding them, roles as in :data:`diru_fast.weights.ROLES`)."""

    src: str
    dst: Dict[str, str]
    input_size: int
    hidden_size: int
    compartment_sizes: Sequence[int]
    bias: bool
    attention: bool = False  # the cell has compartment_attention.{weight,bias}


def _size_mismatch(key: str, got: Sequence[int], want: Sequence[int]) -> str:  # PyTorch's own wording
    return (f"size mismatch for {key}: copying a param with shape {torch.Size(got)} from checkpoint, "
            f"the shape in current model is {torch.Size(want)}.")


def _convert_cell(state_dict: Dict[str, Tensor], prefix: str, cell: PrototypeKeys,
                  missing_keys: List[str], error_msgs: List[str]) -> List[str]:
    """Replace one cell's prototype keys in ``state_dict`` by its fused tensors, if the keys are
    there. Returns the fused keys it could not build (their prototype keys were reported instead)."""
    src = prefix + cell.src
    dst = {role: prefix + key for role, key in cell.dst.items()}
    if any(dst[role] in state_dict for role in ROLES if role in dst):
        return []  # the fused format: nothing to convert (stray prototype keys are reported unexpected)
    expected = prototype_shapes(cell.input_size, cell.hidden_size, cell.compartment_sizes, cell.bias, cell.attention)
    present = [key for key in expected if src + key in state_dict]
    if not present:
        return []
    complete = True
    for key, shape in expected.items():
        value = state_dict.get(src + key)
        if value is None:
            missing_keys.append(src + key)
            complete = False
        elif tuple(value.shape) != shape:
            error_msgs.append(_size_mismatch(src + key, value.shape, shape))
            complete = False
    decay_key = dst.pop("decay_rate", None)  # time decay: the prototype-style key {src}decay_rate
    if decay_key is not None:
        if src + "decay_rate" in state_dict:
            state_dict[decay_key] = state_dict.pop(src + "decay_rate")
        else:
            missing_keys.append(src + "decay_rate")
            complete = False
    tensors = {key: state_dict.pop(src + key) for key in present}
    if not complete:
        return list(dst.values()) + ([] if decay_key is None else [decay_key])
    fused = from_prototype(tensors, cell.input_size, cell.compartment_sizes, cell.bias)
    for role, value in zip(ROLES, fused):
        if value is not None:
            state_dict[dst[role]] = value
    return []


def install_prototype_loading(module: nn.Module) -> None:
    """Let ``module.load_state_dict`` read the prototype's keys of the cells that
    ``module._prototype_cells()`` lists (the hooks are module-level functions: modules still pickle)."""
    module.register_load_state_dict_pre_hook(_load_pre_hook)
    module.register_load_state_dict_post_hook(_load_post_hook)


def _load_pre_hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    unbuilt = module.__dict__.setdefault("_unbuilt_keys", [])
    for cell in module._prototype_cells():
        unbuilt.extend(_convert_cell(state_dict, prefix, cell, missing_keys, error_msgs))


def _load_post_hook(module, incompatible_keys):
    # a parameter whose prototype keys were missing or mis-shaped is reported by those keys alone
    for key in module.__dict__.pop("_unbuilt_keys", ()):
        if key in incompatible_keys.missing_keys:
            incompatible_keys.missing_keys.remove(key)


def install_prototype_writing(module: nn.Module) -> None:
    """Make ``module.state_dict()`` write the prototype's keys of the cells ``module._prototype_cells()``
    lists."""
    module.register_state_dict_post_hook(_write_hook)


def _write_hook(module, state_dict, prefix, local_metadata):
    write_prototype_keys(state_dict, prefix, module._prototype_cells())


def write_prototype_keys(state_dict: Dict[str, Tensor], prefix: str, cells: Sequence[PrototypeKeys]) -> None:
    """Rewrite, in place, each cell's fused parameters in ``state_dict`` as the prototype's keys.

    A cell whose parameters are not all plainly there (a module tool such as ``prune`` or
    ``weight_norm`` keeps them under other names) is left in the fused format, which loads too.
    Values are detached copies, unless the state dict holds parameters (``keep_vars=True``): then
    they are differentiable views of them.
    """
    rest = {}
    for cell in cells:
        keys = {role: prefix + key for role, key in cell.dst.items()}
        if not all(key in state_dict for key in keys.values()):
            continue
        keep_vars = isinstance(state_dict[keys["weight_hh"]], nn.Parameter)
        fused = CellWeights(*(state_dict.pop(keys[role]) if role in keys else None for role in ROLES))
        converted = to_prototype(fused, cell.compartment_sizes)
        if "decay_rate" in keys:
            converted["decay_rate"] = state_dict.pop(keys["decay_rate"])
        for key, value in converted.items():
            rest[prefix + cell.src + key] = value if keep_vars else value.detach().clone()
    others = {key: state_dict.pop(key) for key in list(state_dict) if key.startswith(prefix)}
    state_dict.update(rest)  # the prototype's order: its cells, then the rest (its head)
    state_dict.update(others)


def cell_keys(prefix_src: str, suffix: str, input_size: int, hidden_size: int, compartment_sizes: Sequence[int],
              bias: bool, attention: bool = False, time_decay: bool = False) -> PrototypeKeys:
    """A cell whose fused parameters are named ``{role}{suffix}`` and whose prototype keys start with
    ``prefix_src`` (``attention``: with the ``compartment_attention`` keys; ``time_decay``: with the
    parameter ``decay_rate{suffix}``, key ``decay_rate``)."""
    roles = ROLES if bias else tuple(r for r in ROLES if not r.startswith("bias"))
    dst = {role: role + suffix for role in roles}
    if time_decay:
        dst["decay_rate"] = "decay_rate" + suffix
    return PrototypeKeys(prefix_src, dst, input_size, hidden_size, tuple(compartment_sizes), bias, attention)

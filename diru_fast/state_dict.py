"""Checkpoint formats: the prototype's per-compartment keys and the fast modules' fused parameters.

The fast modules hold each cell's parameters as the seven fused tensors of
:mod:`diru_fast.weights`. Checkpoints written by the prototype (and by ``diru_fast.reference``, and
by release 0.1 of the fast modules) hold them as per-compartment keys. Every fast module *loads*
both; :class:`~diru_fast.DIRU`, the prototype's own model, also *writes* the prototype's keys, so
its checkpoints stay loadable by the prototype. The modules inherit the conversion as methods (no
hook objects, so a whole-module pickle holds nothing but the modules' classes and tensors):

- :class:`PrototypeKeys` describes where one cell's prototype keys sit (``src``, relative to the
  module) and which parameters they become (``dst``);
- :class:`LoadsPrototypeKeys` makes a module's ``load_state_dict`` accept them: strict
  loading still names every missing, unexpected and mis-shaped key, by its name in the file;
- :class:`WritesPrototypeKeys` makes ``state_dict()`` write them, with :func:`write_prototype_keys`,
  which rewrites a state dict's fused keys into the prototype's.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .weights import ROLES, CellWeights, from_prototype, prototype_shapes, to_prototype

__all__ = ["PrototypeKeys", "cell_keys", "LoadsPrototypeKeys", "WritesPrototypeKeys", "write_prototype_keys"]


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


class LoadsPrototypeKeys(nn.Module):
    """A module whose ``load_state_dict`` also reads the prototype's keys of the cells that its
    ``_prototype_cells()`` lists; strict loading names every missing, unexpected and mis-shaped key by
    its name in the file. The conversion is a method (no hook objects): a pickled module holds its
    class and its tensors only, so ``torch.load`` (``weights_only=True``) reads it once the classes are
    allow-listed."""

    def _prototype_cells(self) -> List[PrototypeKeys]:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # a parameter whose prototype keys were missing or mis-shaped is reported by those keys alone:
        # the module owning it (this one, or a submodule loaded after it) leaves it out of missing_keys
        unbuilt = set(self.__dict__.pop("_unbuilt_keys", ()))
        for cell in self._prototype_cells():
            for key in _convert_cell(state_dict, prefix, cell, missing_keys, error_msgs):
                owner = key[len(prefix):].rpartition(".")[0]
                if owner:
                    self.get_submodule(owner).__dict__.setdefault("_unbuilt_keys", set()).add(key)
                else:
                    unbuilt.add(key)
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        missing_keys[before:] = [key for key in missing_keys[before:] if key not in unbuilt]


class WritesPrototypeKeys(nn.Module):
    """A module whose ``state_dict()`` writes the prototype's keys of the cells that its
    ``_prototype_cells()`` lists (:func:`write_prototype_keys`); a method, not a hook (see
    :class:`LoadsPrototypeKeys`)."""

    def _prototype_cells(self) -> List[PrototypeKeys]:
        raise NotImplementedError

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        if args:  # the deprecated positional form (destination, prefix, keep_vars), as nn.Module takes it
            destination, prefix, keep_vars = (tuple(args) + (destination, prefix, keep_vars)[len(args):])[:3]
        result = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        write_prototype_keys(result, prefix, self._prototype_cells())
        return result


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

"""DIRU's cell options on the command line: ``--activation``, ``--compartment-attention``,
``--compartment-sizes`` and ``--compartment-dropout`` (the constructor keywords of
:class:`diru_fast.DIRU`; see ``docs/THEORY.md``), shared by ``train``, ``study``, ``demo`` and the
analyses. They go to every DIRU a command builds, never to the LSTM/GRU/RNN baselines, and are
recorded in the run's config.

:class:`DIRUOptions` holds them (frozen, validated); :func:`add_option_arguments` adds the four
options to a parser; :func:`options_from_args` reads them back (a bad combination with the hidden
size or the number of compartments is a usage error of the command).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any, Dict, FrozenSet, Optional, Sequence, Tuple

__all__ = ["ACTIVATIONS", "DIRUOptions", "add_option_arguments", "options_from_args", "compartment_sizes_arg",
           "dropout_arg"]

ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class DIRUOptions:
    """The cell options of a DIRU (all at their defaults: the plain cell)."""

    activation: str = "tanh"
    compartment_sizes: Optional[Tuple[int, ...]] = None  # [m_0, ..., m_{k-1}], summing to d
    compartment_attention: bool = False
    compartment_dropout: float = 0.0

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.compartment_sizes is not None:
            sizes = tuple(self.compartment_sizes)
            if not sizes or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in sizes):
                raise ValueError(f"compartment_sizes must be positive ints, got {list(sizes)}")
            object.__setattr__(self, "compartment_sizes", sizes)
        if not isinstance(self.compartment_attention, bool):
            raise TypeError(f"compartment_attention must be a bool, got {self.compartment_attention!r}")
        p = self.compartment_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"compartment_dropout must lie in [0, 1), got {p!r}")
        object.__setattr__(self, "compartment_dropout", float(p))

    @property
    def plain(self) -> bool:
        return self == DIRUOptions()

    def check(self, hidden_size: int, num_compartments: int) -> None:
        """ValueError unless these options fit a DIRU of ``hidden_size`` with ``num_compartments``."""
        if self.compartment_sizes is None:
            return
        if sum(self.compartment_sizes) != hidden_size:
            raise ValueError(f"compartment sizes {','.join(map(str, self.compartment_sizes))} sum to "
                             f"{sum(self.compartment_sizes)}, not the hidden size {hidden_size}")
        if len(self.compartment_sizes) != num_compartments:
            raise ValueError(f"compartment sizes {','.join(map(str, self.compartment_sizes))} give "
                             f"{len(self.compartment_sizes)} compartments, not {num_compartments}")

    def in_use(self, training: bool = True) -> FrozenSet[str]:
        """The options a forward uses, as the backends name them (``"relu"``, ``"attention"``,
        ``"dropout"``; dropout only while training): the ``options`` of
        :func:`diru_fast.backends.resolve_backend`."""
        used = set()
        if self.activation != "tanh":
            used.add(self.activation)
        if self.compartment_attention:
            used.add("attention")
        if self.compartment_dropout and training:
            used.add("dropout")
        return frozenset(used)

    def kwargs(self) -> Dict[str, Any]:
        """The keywords of :class:`diru_fast.DIRU` (only those off their defaults: a plain cell gets none)."""
        default = DIRUOptions()
        out = {}
        for name, value in asdict(self).items():
            if value != getattr(default, name):
                out[name] = list(value) if name == "compartment_sizes" else value
        return out

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["compartment_sizes"] = None if self.compartment_sizes is None else list(self.compartment_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "DIRUOptions":
        d = dict(d or {})
        if d.get("compartment_sizes") is not None:
            d["compartment_sizes"] = tuple(d["compartment_sizes"])
        return cls(**d)


def compartment_sizes_arg(text: str) -> Tuple[int, ...]:
    """``"5,7,12"`` -> ``(5, 7, 12)`` (an argparse ``type=``)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers such as 5,7,12, "
                                         f"got {text!r}") from None
    if any(m <= 0 for m in sizes):
        raise argparse.ArgumentTypeError(f"every compartment size must be positive, got {text!r}")
    return sizes


def dropout_arg(text: str) -> float:
    """A probability in [0, 1) (an argparse ``type=``)."""
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text!r}")
    return p


def add_option_arguments(p: argparse.ArgumentParser) -> None:
    """The four cell options (each applies to DIRU only, not to the baselines)."""
    g = p.add_argument_group("DIRU cell options (DIRU only; the baselines ignore them)")
    g.add_argument("--activation", default="tanh", choices=list(ACTIVATIONS),
                   help="the compartments' nonlinearity")
    g.add_argument("--compartment-attention", action="store_true",
                   help="softmax attention over the compartments (scales compartment c's output by k * alpha_c)")
    g.add_argument("--compartment-sizes", type=compartment_sizes_arg, default=None, metavar="M0,M1,...",
                   help="unequal compartments: their sizes, comma-separated, summing to the hidden size "
                        "(their number is the number of compartments)")
    g.add_argument("--compartment-dropout", type=dropout_arg, default=0.0, metavar="P",
                   help="dropout on the compartment outputs while training, in [0, 1)")


def options_from_args(args: argparse.Namespace) -> DIRUOptions:
    return DIRUOptions(activation=args.activation, compartment_sizes=args.compartment_sizes,
                       compartment_attention=args.compartment_attention,
                       compartment_dropout=args.compartment_dropout)


def sizes_text(sizes: Optional[Sequence[int]]) -> str:
    return "equal" if sizes is None else ",".join(map(str, sizes))

"""The tuning panel of the analyses' figures: validation MSE / predict-the-mean against the learning rate
(median over the tuning seeds, the range as a band), one line per model, the picked rate marked."""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence

__all__ = ["draw_lr_curves"]


def draw_lr_curves(ax, curves: Dict[str, Sequence[Dict[str, Any]]], picked: Dict[str, float], title: str = "") -> None:
    """``curves``: label -> :func:`diru_fast.experiments.tuning.lr_curve` rows; ``picked``: label -> rate.
    A diverged trial (inf) is drawn at the top of the panel."""
    finite = [v for rows in curves.values() for c in rows for v in (c["low"], c["high"]) if math.isfinite(v) and v > 0]
    top = max(finite) * 2 if finite else 2.0
    import matplotlib

    palette = matplotlib.colormaps["tab20"] if len(curves) > 10 else None  # distinct colours past the default 10
    for i, (label, rows) in enumerate(curves.items()):
        lrs = [c["lr"] for c in rows]
        clip = lambda v: v if math.isfinite(v) else top  # noqa: E731
        med = [clip(c["median"]) for c in rows]
        line, = ax.plot(lrs, med, marker="o", label=label, **({"color": palette(i % 20)} if palette else {}))
        ax.fill_between(lrs, [clip(c["low"]) for c in rows], [clip(c["high"]) for c in rows], color=line.get_color(),
                        alpha=0.15, lw=0)
        if label in picked:
            i = lrs.index(picked[label]) if picked[label] in lrs else None
            if i is not None:
                ax.scatter([lrs[i]], [med[i]], s=90, facecolors="none", edgecolors=line.get_color(), zorder=4)
    ax.axhline(0.3, color="k", ls=":", lw=1, label="learned level (0.3)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Adam learning rate")
    ax.set_ylabel("best validation MSE / predict-the-mean")
    ax.set_title(title or "tuning (median over tuning seeds; circle: picked)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)

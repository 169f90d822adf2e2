"""The quick demo's settings and its check against the full study.

The demo runs the study's protocol (standardised data, clipping, early stopping, the learned rule,
the same verdict rules) at a small budget. Instead of tuning (which would take minutes) every model
trains at the learning rate the full study picked for it on that task: :data:`DEMO_LR`, copied from
``results/study/results.json`` (``picked_lr``) of the committed study. :data:`STUDY_VERDICTS` holds that
study's verdicts (DIRU vs each baseline, per task), so the demo can say where its own verdicts agree
with the full study and where (and why) they differ. Regenerating the study means updating both tables
(``python -m diru_fast.experiments.demo results/study`` prints them).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List

__all__ = ["DEMO_LR", "STUDY_VERDICTS", "STUDY_SOURCE", "agreement_section", "tables_from_study"]

# where the two tables below come from (the committed study: command, commit)
STUDY_SOURCE = "results/study: `python -m diru_fast study --n-train 512 --seeds 10`, code 5fe7d5d"

# {task: {model kind: Adam lr}}: the rate the full study picked on validation (tuning seeds)
DEMO_LR: Dict[str, Dict[str, float]] = {
    "sine": {"diru": 3e-3, "lstm": 3e-3, "lstm_fb1": 3e-3, "gru": 3e-3},
    "memory": {"diru": 3e-4, "lstm": 3e-2, "lstm_fb1": 3e-4, "gru": 3e-2},
    "lorenz": {"diru": 1e-3, "lstm": 3e-3, "lstm_fb1": 3e-2, "gru": 1e-2},
}

# {task: {baseline key: verdict of "DIRU beats it"}} in the full study
STUDY_VERDICTS: Dict[str, Dict[str, str]] = {
    "sine": {"lstm": "does not hold", "lstm_fb1": "does not hold", "gru": "does not hold"},
    "memory": {"lstm": "only DIRU learned", "lstm_fb1": "inconclusive", "gru": "only DIRU learned"},
    "lorenz": {"lstm": "inconclusive", "lstm_fb1": "inconclusive", "gru": "does not hold"},
}


def tables_from_study(results: Dict[str, Any]) -> Dict[str, Any]:
    """The two tables above, from a study's results (to paste here after regenerating it)."""
    from .report import comparisons

    lr = {t: {k: v for k, v in m.items()} for t, m in (results.get("picked_lr") or {}).items()}
    verdicts: Dict[str, Dict[str, str]] = {}
    for c in comparisons(results):
        verdicts.setdefault(c["task"], {})[c["baseline"]] = c["verdict"]
    return {"DEMO_LR": lr, "STUDY_VERDICTS": verdicts}


def agreement_section(results: Dict[str, Any]) -> str:
    """Markdown: each of the demo's verdicts beside the full study's, and why they may differ."""
    from .report import comparisons

    lines = ["## The demo against the full study", "",
             f"The full study ({STUDY_SOURCE}) ran the same protocol with a learning-rate grid per model, "
             "2 tuning seeds, 10 test seeds and 512 training sequences of length 50; the demo trains at the rates it picked, on fewer seeds "
             "and sequences, so its tests have less power: an *inconclusive* here where the study found a "
             "difference is expected, a verdict of the opposite sign is not.", "",
             "| task | DIRU vs | demo | full study | agree? |", "|---|---|---|---|---|"]
    if not STUDY_VERDICTS:
        return "\n".join(lines[:2] + ["(no full-study verdicts recorded in this version)"])
    for c in comparisons(results):
        study = STUDY_VERDICTS.get(c["task"], {}).get(c["baseline"])
        if study is None:
            continue
        lines.append(f"| {c['task']} | {c['label']} | {c['verdict']} | {study} | {_agree(c['verdict'], study)} |")
    return "\n".join(lines)


def _agree(demo: str, study: str) -> str:
    from . import claims as C

    if demo == study:
        return "yes"
    opposite = {C.HOLDS: C.DOES_NOT_HOLD, C.DOES_NOT_HOLD: C.HOLDS}
    if opposite.get(demo) == study:
        return "**no: opposite verdicts**"
    if demo == C.INCONCLUSIVE and study in opposite:
        return "no: the demo lacks the power (fewer seeds, smaller budget)"
    return "no: different learned status at the demo's small budget"


def _main(argv: List[str]) -> int:
    import pprint

    from .study import load_results

    pprint.pprint(tables_from_study(load_results(argv[0] if argv else "results/study")), width=110)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

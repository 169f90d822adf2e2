"""``results/ANALYSES.md``: for each of the prototype's scientific claims, the claim (quoted), the
rule (stated before the numbers), the measurement (numbers and figure) and the verdict, built from
the analyses' JSON files and nothing else.

:func:`write_analyses_report` reads every ``<name>.json`` present in the results folder (written by
the ``python -m diru_fast <analysis>`` subcommands) and rewrites the markdown; an analysis that has
not been run yet is listed with the command that runs it. Result folders of the same analyses run
with other DIRU cell options (e.g. ``results/analyses-attention``) are passed as ``variants``: each of
their analyses gets a subsection under the plain one and a row in the summary, all from their JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from ..experiments.io import atomic_write_text
from . import report_gradient_flow, report_memory_capacity, report_real_data, report_specialization
from .report_format import _meta, _options_clause
from .common import read_json

__all__ = ["ANALYSES", "COMMANDS", "markdown", "write_analyses_report", "load_results", "verdict_summary",
           "variant_label"]

ANALYSES = ("specialization", "gradient_flow", "memory_capacity", "real_data")
COMMANDS = {"specialization": "python -m diru_fast specialization",
            "gradient_flow": "python -m diru_fast gradient-flow",
            "memory_capacity": "python -m diru_fast memory-capacity",
            "real_data": "python -m diru_fast real-data"}
# The rules every regenerated analysis follows (docs/STUDY.md: the study's protocol), stated before any number.
PROTOCOL_RULES = (
    "**Protocol and rules (fixed before the runs; the comparison study's).** Data are standardised with the training "
    "split's statistics. Every model is tuned alike: its Adam learning rate is picked from the grid 3e-4, 1e-3, 3e-3, "
    "1e-2, 3e-2 by the lowest median best validation loss (over that of the trivial baseline) on tuning seeds "
    "(1000 on) disjoint from the test seeds (0 on); gradient clipping at global norm 1; early stopping on validation "
    "(patience 12) with an epoch cap, the runs that hit the cap reported; the best validation epoch's weights are "
    "scored on a test split used for nothing else. The validation loss against the learning rate is tabulated for "
    "every model: the range of rates at which a model learns is a result. **Learned:** a model has learned a task "
    "when its test MSE is at most 0.3× that of predicting the training mean (median over seeds; a section states its "
    "trivial baseline where the task is not a regression). A comparison between models is made only where both "
    "learned; otherwise the result is \"not learned\" or \"only X learned\", never \"holds\", \"higher\" or "
    "\"lower\". **Verdicts** follow the Holm-adjusted p over each analysis' family of comparisons (a nominal p is "
    "shown beside it and decides nothing). Every headline shows each model's error as a multiple of predicting the "
    "mean and, where the analysis has one, of a stronger trivial baseline.")
OLD_PROTOCOL = (
    "ran before the study adopted its current protocol: each trains every model at one learning rate of its own "
    "recipe with fixed epochs and its own learned criterion, and a verdict there that rests on a p-value before the "
    "Holm adjustment is not a finding. Read them as results at those settings; the regenerated study "
    "(`results/study/report.md`) supersedes anything they also measure")


def follows_protocol(result: Dict[str, Any]) -> bool:
    """Was ``result`` made with the study's protocol (a learning-rate grid tuned on tuning seeds)? Results
    written before it have no ``tuning`` trials."""
    return "tuning" in result and "lr_grid" in result.get("config", {})


def protocol_status(results: Dict[str, Dict[str, Any]],
                    variants: Sequence[Tuple[Dict[str, Dict[str, Any]], str, str]] = ()) -> str:
    """The rules (when every result present follows the study's protocol) and, if some do not, which."""
    old = [TITLES[n] for n in ANALYSES if n in results and not follows_protocol(results[n])]
    for vresults, _, _ in variants:
        old += [f"{TITLES[n]} ({variant_label(vresults[n])})" for n in ANALYSES
                if n in vresults and not follows_protocol(vresults[n])]
    if not old:
        return PROTOCOL_RULES
    return (PROTOCOL_RULES + "\n\n**Not yet regenerated (old protocol):** " + "; ".join(old) + ". These " + OLD_PROTOCOL
            + ".")


TITLES = {"specialization": "Compartments specialize to different frequencies",
          "gradient_flow": "Gradient flow: better than a vanilla RNN, comparable to LSTM",
          "memory_capacity": "Memory capacity grows about k× with k compartments",
          "real_data": "Real data: DIRU vs LSTM vs GRU at equal parameter count"}


VARIANT_ANALYSES = ("specialization", "memory_capacity")  # the analyses also run with attention over compartments
SECTION_MODULES = {"specialization": report_specialization, "gradient_flow": report_gradient_flow,
                   "memory_capacity": report_memory_capacity, "real_data": report_real_data}
SECTIONS: Dict[str, Callable[[Dict[str, Any], str], str]] = {
    name: getattr(module, f"section_{name}") for name, module in SECTION_MODULES.items()}


def variant_label(result: Dict[str, Any]) -> str:
    """"with attention over compartments" (the cell options of a result), "" for the plain cell."""
    return _options_clause(result["config"]).lstrip(", ")


def verdict_summary(results: Dict[str, Dict[str, Any]]) -> List[Dict[str, str]]:
    """One row per claim: the claim, the verdict, the headline number."""
    return [row for name in ANALYSES if name in results for row in SECTION_MODULES[name].summary_rows(results[name])]


def markdown(results: Dict[str, Dict[str, Any]], fig_dir: str = "analyses",
             variants: Sequence[Tuple[Dict[str, Dict[str, Any]], str, str]] = ()) -> str:
    """The whole ANALYSES.md for the analyses in ``results`` (name -> JSON result); ``variants``:
    (results, figure folder relative to the report, the folder as given) of the same analyses run with
    other cell options, each reported under its plain analysis."""
    parts = [
        "# Do the prototype's scientific claims hold?", "",
        "The prototype's README makes four scientific claims beyond its toy-task numbers (those are tested by "
        "the study: `python -m diru_fast study`). Each is checked here, on this reconstruction of the prototype's "
        "tasks (its code was not run), with a measurement and a verdict — **holds**, **does not hold**, "
        "**inconclusive**, **not learned** or **only X learned** — by a rule stated before the numbers, whatever it "
        "says. Where an "
        "analysis makes several comparisons, their p-values are Holm-adjusted over that analysis' family (95% "
        "intervals shown unadjusted). Nothing was tuned for or against DIRU; every model in a comparison gets the "
        "same data, seeds and tuning budget. Every number below is generated from the JSON files next to the "
        "figures (`python -m diru_fast analyses --report-only`).",
        "",
        protocol_status(results, variants),
        "",
        "One fact frames two of them: **the DIRU math does not depend on the number of compartments k.** The k "
        "compartments are a block split of one d-unit dendrite (stacking their W_x, W_h, bias and gate rows gives "
        "exactly the k = 1 cell; `tests/test_reference.py::test_compartment_split_does_not_change_the_function`), "
        "the parameter count is the same for every k at fixed d (m·n·k = d·n), and the default initialisation draws "
        "every block from the same distribution (nn.Linear's bound depends on the fan-in n, d or n + d, not on m). "
        "So DIRU(k) for different k is the same model family with the same initial distribution.", "",
        "## Summary", "",
        "| claim | verdict | headline |", "|---|---|---|",
    ]
    for row in verdict_summary(results):
        parts.append(f"| {row['claim']} | **{row['verdict']}** | {row['headline']} |")
    for vresults, _, _ in variants:
        for row in verdict_summary(vresults):
            label = variant_label(next(iter(vresults.values())))
            parts.append(f"| … {label}: {row['claim'][0].lower()}{row['claim'][1:]} | **{row['verdict']}** | "
                         f"{row['headline']} |")
    missing = [name for name in ANALYSES if name not in results]
    if missing:
        parts += ["", "Not run yet: " + ", ".join(f"{TITLES[n]} (`{COMMANDS[n]}`)" for n in missing) + "."]
    for vresults, _, vdir in variants:
        absent = [n for n in VARIANT_ANALYSES if n in results and n not in vresults]
        if absent:
            label = variant_label(next(iter(vresults.values())))
            parts += ["", f"Not run {label} (in `{vdir}`): " + ", ".join(TITLES[n] for n in absent) + "."]
    parts += ["", "Reproduce everything (from a few minutes to about half an hour each on one CPU thread; each section "
              "gives its wall time): `python -m diru_fast analyses`; or one "
              "at a time: " + ", ".join(f"`{COMMANDS[n]}`" for n in ANALYSES) + ". Each writes its JSON and figure "
              "to its `--out` folder (default `diru_analyses/`) and rewrites the report from every JSON there "
              "(default `<out>/ANALYSES.md`; this file: `--out results/analyses --report results/ANALYSES.md`"
              + "".join(f" --variant {d}" for _, _, d in variants) + ").", ""]
    for i, name in enumerate(ANALYSES, start=1):
        if name not in results:
            continue
        parts += [f"## {i}. {TITLES[name]}", "", _meta(results[name]), "", SECTIONS[name](results[name], fig_dir), ""]
        for vresults, vdir, _ in variants:
            if name in vresults:
                body = SECTIONS[name](vresults[name], vdir).replace("\n### ", "\n#### ")
                parts += [f"### {i}b. {TITLES[name]}, {variant_label(vresults[name])}", "", _meta(vresults[name]), "",
                          body, ""]
    return "\n".join(parts)


def load_results(out_dir: Path) -> Dict[str, Dict[str, Any]]:
    """Every ``<analysis>.json`` present in ``out_dir``."""
    return {name: read_json(Path(out_dir) / f"{name}.json") for name in ANALYSES
            if (Path(out_dir) / f"{name}.json").exists()}


def write_analyses_report(out_dir: Path, report_path: Path, variants: Sequence[Path] = ()) -> Path:
    """Rewrite ``report_path`` from the JSON results in ``out_dir`` and in each ``variants`` folder
    (the same analyses with other cell options; figures linked relative to the report)."""
    out_dir, report_path = Path(out_dir), Path(report_path)

    def rel(folder: Path) -> str:
        return Path(os.path.relpath(Path(folder).resolve(), report_path.resolve().parent)).as_posix()

    extra = [(load_results(Path(v)), rel(Path(v)), Path(v).as_posix()) for v in variants]
    return atomic_write_text(report_path, markdown(load_results(out_dir), rel(out_dir),
                                                   [e for e in extra if e[0]]))

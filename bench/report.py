"""Turn a pytest-benchmark JSON run of bench/test_bench_cpu.py into the markdown/JSON/PNG report.

    python bench/report.py RAW.json [--out bench/results] [--name cpu] [--scaling]
    python bench/report.py bench/results/cpu-2t.json --name cpu-2t    # rewrite the .md of a report

Ratios are taken against torch.nn measured in the same run: each DIRU round is paired with the
torch.nn round run just before it, and the ratio is the median of the per-round ratios. The
report's time table shows, beside each ratio, the time that agrees with it (the ratio times the
torch.nn median); the medians of each model's own rounds are a second table (on a machine whose
speed drifts they can disagree with the paired ratio, which is the measurement). --scaling adds the
T and B scaling series (timed now, in this process). Given a report JSON (this script's own output,
``records`` instead of ``benchmarks``), only its .md is rewritten, from the recorded numbers and
environment: nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Dict, List

import torch

from diru_fast import available_backends, benchmarking as bm

TIMES_NOTE = (
    "Times: torch.nn (`lstm`) is the median of its rounds; each DIRU backend is its paired ratio "
    "(in parentheses: the median over rounds of DIRU's time over the torch.nn round run just before "
    "it) times that median, so every row's times agree with its ratios. The medians of each model's "
    "own rounds, unpaired, are the next table; on a machine whose speed drifts they can disagree "
    "with the ratio, which is the measurement.")


def records_from_pytest_benchmark(raw: dict) -> list:
    records = []
    for b in raw["benchmarks"]:
        info = b["extra_info"]
        stats = b["stats"]
        records.append({**info, "median_s": stats["median"], "iqr_s": stats["iqr"], "runs": stats["rounds"]})
    return records


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f} ms"


def time_tables(records: List[Dict[str, object]]) -> str:
    """The paired time table (times that agree with the ratios), the unpaired medians and the
    activation memory of the backend-vs-torch.nn cases ("" when there are none)."""
    impls, header, rows = bm._case_rows(records)
    if not rows:
        return ""
    paired, medians = list(header), list(header)
    for shape, mode, row, base in rows:
        p_cells, m_cells = [], []
        for impl in impls:
            r = row.get(impl)
            if r is None:
                p_cells.append("–")
                m_cells.append("–")
                continue
            m_cells.append(_ms(float(r["median_s"])))
            if impl == bm.BASELINE or not base:
                p_cells.append(_ms(float(r["median_s"])))
            else:
                ratio = bm.ratio_vs_baseline(r, float(base))
                p_cells.append(f"{_ms(ratio * float(base))} ({ratio:.2f}×)")
        label = f"| {bm._shape_label(shape, mode)} | {mode} | "
        paired.append(label + " | ".join(p_cells) + " |")
        medians.append(label + " | ".join(m_cells) + " |")
    out = [TIMES_NOTE, ""] + paired + ["", "Medians of each model's own rounds (unpaired):", ""] + medians
    mem = [r for r in bm._main_records(records) if r.get("saved_bytes") is not None and r["mode"] == "train"]
    if mem:
        out += ["", "| shape | activation memory saved for backward | " + " | ".join(impls) + " |",
                "|---|---|" + "---|" * len(impls)]
        for shape in bm.SHAPES:
            row = {r["impl"]: r for r in mem if r["shape"] == shape}
            if row:
                cells = [f"{row[i]['saved_bytes'] / 2**20:.2f} MiB" if i in row else "–" for i in impls]
                out.append(f"| {shape} | train | " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown(name: str, payload: dict) -> str:
    """The report's markdown from its JSON payload (``environment``, ``records``, ``scaling``, extras)."""
    records = payload["records"]
    md = [f"# Benchmark: {name}", "", f"`{json.dumps(payload.get('environment', {}))}`"]
    times = time_tables(records)
    if times:
        md += ["", times, "",
               "Achieved GFLOP/s (each model's own multiply-adds in its products, 2 FLOPs each; gate math and",
               "the head not counted; a model's time is its paired ratio times the torch.nn median):", "",
               bm.gflops_table(records)]
    options = bm.options_table(records)
    if options:
        md += ["", "The cell options against the plain DIRU on the same backend (time: the median of each "
               "variant's own rounds; ratio to the plain cell: the median of the per-round ratios against "
               "the plain round run just before it; the backend each resolved to):", "", options]
    extra = {k: v for k, v in payload.items() if k not in ("environment", "records", "scaling")}
    if extra:
        md += ["", "```", json.dumps(extra, indent=2), "```"]
    if payload.get("scaling"):
        md += ["", bm._scaling_summary(payload["scaling"])]
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="pytest-benchmark JSON (--benchmark-json), or a report JSON")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--scaling", action="store_true")
    args = parser.parse_args(argv)
    raw = json.loads(args.raw.read_text())
    if "records" in raw and "benchmarks" not in raw:  # a report JSON: rewrite its markdown only
        path = args.out / f"{args.name}.md"
        path.write_text(markdown(args.name, raw))
        print(f"wrote {path}")
        return 0
    records = records_from_pytest_benchmark(raw)
    threads = {r.get("threads") for r in records}
    if len(threads) == 1 and None not in threads:
        torch.set_num_threads(int(threads.pop()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = next((b for b in available_backends("cpu") if b not in ("reference",)), "torch")
    extra = {"machine_info": raw.get("machine_info", {}).get("cpu", {}).get("brand_raw", "")}
    scaling = None
    if args.scaling:
        scaling = bm.scaling_series(bm.BASELINE) + bm.scaling_series(fast)
    path = bm.write_report(records, args.out, args.name, extra, scaling)  # JSON, PNG, history.csv
    path.write_text(markdown(args.name, json.loads(path.with_suffix(".json").read_text())))
    print(time_tables(records))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

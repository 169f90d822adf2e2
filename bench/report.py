"""Turn a pytest-benchmark JSON run of bench/test_bench_cpu.py into the markdown/JSON/PNG report.

    python bench/report.py RAW.json [--out bench/results] [--name cpu] [--scaling]

Ratios are taken against torch.nn measured in the same run. --scaling adds the T and B scaling
series (timed now, in this process).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from diru_fast import available_backends, benchmarking as bm


def records_from_pytest_benchmark(raw: dict) -> list:
    records = []
    for b in raw["benchmarks"]:
        info = b["extra_info"]
        stats = b["stats"]
        records.append({**info, "median_s": stats["median"], "iqr_s": stats["iqr"], "runs": stats["rounds"]})
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--scaling", action="store_true")
    args = parser.parse_args(argv)
    raw = json.loads(args.raw.read_text())
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
    path = bm.write_report(records, args.out, args.name, extra, scaling)
    print(bm.markdown_table(records))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

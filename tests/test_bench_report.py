"""bench/report.py: every time in the report's first table agrees with the paired ratio beside it,
and a committed report JSON re-renders to markdown without timing anything or losing its
environment."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_times_agree_with_their_paired_ratios_and_rerender_keeps_the_environment(tmp_path):
    report = _report()
    payload = json.loads((ROOT / "bench" / "results" / "cpu-2t.json").read_text())
    first = report.time_tables(payload["records"]).split("\n\n")[1].splitlines()
    header = [c.strip() for c in first[0].strip("|").split("|")]
    checked = 0
    for line in first[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        base = float(cells[header.index("lstm")].split()[0])
        for cell in cells[header.index("lstm") + 1:]:
            m = re.fullmatch(r"([\d.]+) ms \(([\d.]+)×\)", cell)
            if m:
                t, ratio = float(m.group(1)), float(m.group(2))
                # equal up to the two-decimal rounding of the three printed numbers
                assert abs(t / base - ratio) <= 0.005 + (0.005 + 0.005 * ratio) / base, line
                checked += 1
    assert checked >= 20
    assert report.main([str(ROOT / "bench" / "results" / "cpu-2t.json"), "--out", str(tmp_path), "--name", "x"]) == 0
    md = (tmp_path / "x.md").read_text()
    assert json.dumps(payload["environment"]) in md and "unpaired" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.md"]

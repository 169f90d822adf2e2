"""The analyses' subcommands end to end at tiny sizes: JSON, figure, and the markdown report."""

import json

import pytest

from diru_fast import cli


TINY = {
    "specialization": ["--ks", "2", "4", "--seeds", "2", "--n-train", "16", "--n-val", "8", "--seq-len", "24",
                       "--hidden-size", "8", "--epochs", "1", "--n-perm", "20", "--burn-in", "4", "--n-test", "8",
                       "--lr-grid", "0.001", "0.01", "--tune-seeds", "1", "--tune-k", "2"],
    "gradient-flow": ["--seeds", "2", "--n-train", "16", "--n-val", "8", "--seq-len", "13", "--hidden-size", "4",
                      "--epochs", "1", "--n-probe", "3", "--n-test", "8", "--lr-grid", "1e-3", "1e-2", "--tune-seeds", "1"],
    "memory-capacity": ["--ks", "1", "2", "4", "--seq-lens", "12", "14", "--seeds", "2", "--n-train", "16",
                        "--n-val", "8", "--hidden-size", "4", "--epochs", "1", "--n-test", "8", "--lr-grid", "0.001", "0.01",
                        "--tune-seeds", "1"],
    "real-data": ["--seeds", "2", "--digits-hidden", "4", "--digits-epochs", "1", "--sunspots-hidden", "4",
                  "--sunspots-epochs", "1", "--lr-grid", "1e-3", "1e-2", "--tune-seeds", "1"],
}
SECTIONS = ("## 1. Compartments specialize", "## 2. Gradient flow", "## 3. Memory capacity", "## 4. Real data")


@pytest.mark.parametrize("argv", [[c, "--help"] for c in TINY] + [["analyses", "--help"]])
def test_every_analysis_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_config_options_come_from_the_config_fields():
    args = cli.build_parser().parse_args(["memory-capacity", "--ks", "1", "8", "--no-rnn-reference"])
    assert args.ks == [1, 8] and args.rnn_reference is False and args.threads == 1
    args = cli.build_parser().parse_args(["gradient-flow"])
    assert args.models == ["diru", "lstm", "lstm_fb1", "gru", "rnn", "rnn_matched"] and args.norm == "2" and args.seeds >= 3
    assert cli.build_parser().parse_args(["real-data"]).seeds >= 3


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyses")
    report = out / "ANALYSES.md"
    for command, argv in TINY.items():
        assert cli.main([command, "--out", str(out), "--report", str(report), "--quiet", "--backend", "torch"] + argv) == 0
    return out, report


def test_each_subcommand_writes_json_figure_and_report(tiny_results):
    out, report = tiny_results
    for name in ("specialization", "gradient_flow", "memory_capacity", "real_data"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["analysis"] == name and result["meta"]["command"].startswith("python -m diru_fast ")
        assert result["meta"]["diru_backend"] == "torch"
        assert (out / f"{name}.png").stat().st_size > 1000
    text = report.read_text()
    for heading in SECTIONS:
        assert heading in text
    assert text.count("**Claim.**") == 4 and text.count("**Measurement.**") == 4
    assert text.count("Verdict") >= 4 and "](./specialization.png)" in text  # the report sits in --out here
    assert "Not run yet" not in text


def test_results_have_the_promised_contents(tiny_results):
    out, _ = tiny_results
    spec = json.loads((out / "specialization.json").read_text())
    assert {r["k"] for r in spec["runs"]} == {2, 4} and len(spec["runs"]) == 4
    run = spec["runs"][0]
    assert 0 < run["trained"]["p_value"] <= 1 and len(run["trained"]["profiles"]) == run["k"]
    flow = json.loads((out / "gradient_flow.json").read_text())
    assert {r["model"] for r in flow["runs"]} == {"diru", "lstm", "lstm_fb1", "gru", "rnn", "rnn_matched"}
    assert len(flow["summary"]["tests"]) == 8 and all("p_holm" in t for t in flow["summary"]["tests"] if t["tested"])
    assert len(flow["runs"][0]["init"]["mean"]) == 14 and flow["runs"][0]["init"]["mean"][0] == 0.0
    mem = json.loads((out / "memory_capacity.json").read_text())
    assert len(set(sum(mem["params_by_k"].values(), []))) == 1  # one parameter count for every k
    assert mem["summary"]["f_test"] is not None or not mem["summary"]["learned_delays"]  # tested where DIRU learned
    assert {r["model"] for r in mem["tuning"]} == {"diru", "rnn", "rnn_matched"} and "test_nmse" in mem["runs"][0]
    real = json.loads((out / "real_data.json").read_text())
    params = {(r["dataset"], r["model"]): r["params"] for r in real["runs"]}
    for dataset in ("digits", "sunspots"):
        p_diru = params[(dataset, "diru")]
        for base in ("lstm_matched", "gru_matched"):
            assert abs(params[(dataset, base)] - p_diru) / p_diru < 0.2  # matched (tiny d: coarse steps)
    assert all("accuracy" in r for r in real["runs"] if r["dataset"] == "digits")


def test_report_only_rewrites_the_report(tiny_results, tmp_path, capsys):
    out, _ = tiny_results
    report = tmp_path / "sub" / "ANALYSES.md"
    assert cli.main(["analyses", "--report-only", "--out", str(out), "--report", str(report)]) == 0
    text = report.read_text()
    assert all(h in text for h in SECTIONS)
    link = text.split("![gradient_flow](")[1].split(")")[0]  # relative to the report's folder
    assert (report.parent / link).resolve() == (out / "gradient_flow.png").resolve()
    printed = capsys.readouterr().out
    assert "Compartments specialize" in printed and "Memory capacity" in printed


def test_report_lists_analyses_not_run_yet(tmp_path):
    assert cli.main(["analyses", "--report-only", "--out", str(tmp_path), "--report", str(tmp_path / "A.md")]) == 0
    text = (tmp_path / "A.md").read_text()
    assert "Not run yet" in text and "python -m diru_fast gradient-flow" in text


def test_default_output_is_a_folder_of_its_own(tmp_path, monkeypatch, capsys):
    """Run from the repository root, the analyses never write over the committed results/: by
    default they write diru_analyses/ and its ANALYSES.md in the working directory."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    args = cli.build_parser().parse_args(["gradient-flow"])
    assert not (root / args.out).resolve().is_relative_to((root / "results").resolve())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyses", "--report-only"]) == 0
    assert (tmp_path / "diru_analyses" / "ANALYSES.md").is_file()
    assert cli.main(["analyses", "--report-only", "--report", "elsewhere.md"]) == 0
    assert (tmp_path / "elsewhere.md").is_file()
    assert "wrote diru_analyses/ANALYSES.md" in capsys.readouterr().out


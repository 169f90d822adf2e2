"""The command line: help for every subcommand, the demo end to end (tiny), train, registry."""

import argparse
import json

import pytest
import torch

from diru_fast import cli
from diru_fast.experiments.plots import PLOT_FILES

TINY_DEMO = ["--epochs", "2", "--seeds", "2", "--n-train", "32", "--n-val", "16", "--seq-len", "12",
             "--hidden", "8", "--compartments", "2", "--batch-size", "16", "--quiet", "--device", "cpu",
             "--backend", "torch", "--workers", "1"]


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["study", "--help"], ["train", "--help"],
                                  ["bench", "--help"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--out" in out if argv != ["--help"] else "demo" in out and "bench" in out


def test_study_defaults_are_the_seeds():
    args = cli.build_parser().parse_args(["study"])
    assert (args.n_train, args.n_val, args.seq_len, args.hidden, args.epochs, args.batch_size, args.lr) == \
        (800, 200, 50, 64, 50, 32, 1e-3)
    assert args.seeds >= 3 and args.match_params == "off" and args.threads == 1
    assert cli.build_parser().parse_args(["study", "--match-params"]).match_params == "on"
    assert cli.build_parser().parse_args(["study", "--match-params", "both"]).match_params == "both"


def test_unknown_subcommand_fails():
    with pytest.raises(SystemExit) as exc:
        cli.main(["fly"])
    assert exc.value.code == 2


def test_demo_end_to_end_tiny(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)] + TINY_DEMO) == 0
    out = capsys.readouterr().out
    assert "## Headline" in out and "DIRU's improvement" in out and "verdict" in out
    assert "## The demo against the full study" in out
    for name in ("report.md", "results.json", "results.csv") + PLOT_FILES[:3]:  # no tuning plot: the demo does not tune
        assert (tmp_path / name).stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["command"].startswith("python -m diru_fast demo --out")
    assert len(results["runs"]) == 3 * 4 * 2 and not results["tuning"]
    from diru_fast.experiments.demo import DEMO_LR

    # each model trains at the rate the full study picked for it (the demo's documented table)
    assert all(r["lr"] == DEMO_LR[r["task"]][r["kind"]] for r in results["runs"])
    assert results["config"]["normalize"] and results["config"]["clip_norm"] == 1.0


def test_train_writes_checkpoint_and_history(tmp_path):
    def train(out, epochs, *extra):
        argv = ["train", "--task", "lorenz", "--model", "gru", "--n-train", "32", "--n-val", "16", "--seq-len",
                "12", "--hidden", "8", "--batch-size", "16", "--epochs", str(epochs), "--quiet", "--device", "cpu",
                "--out", str(tmp_path / out), *extra]
        assert cli.main(argv) == 0
        return torch.load(tmp_path / out / "checkpoint.pt", weights_only=True)

    train("a", 2)
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert len(hist["val_loss"]) == 2 and hist["world_size"] == 1
    # one more epoch from the checkpoint equals three epochs straight
    b = train("b", 3, "--resume-from", str(tmp_path / "a" / "checkpoint.pt"))
    c = train("c", 3)
    assert b["history"]["val_loss"] == c["history"]["val_loss"]
    assert all(torch.equal(b["model_state"][k], c["model_state"][k]) for k in c["model_state"])


def test_registry_takes_new_subcommands(capsys):
    seen = []
    cli.register("echo-test", "a test subcommand", lambda p: p.add_argument("--word", default="hi"),
                 lambda args: seen.append(args.word) or 0)
    try:
        assert cli.main(["echo-test", "--word", "dendrite"]) == 0
        assert seen == ["dendrite"]
    finally:
        del cli.SUBCOMMANDS["echo-test"]


def _subparsers():
    """name -> parser of every subcommand that parses its own options (not the passthrough bench)."""
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in action.choices.items() if not cli.SUBCOMMANDS[name].passthrough}


def test_every_option_has_help_and_shows_its_default_once():
    """The command line's formatter appends each option's default to its help text; a help that
    states a default itself would show two."""
    parsers = _subparsers()
    assert {"demo", "study", "train", "specialization", "gradient-flow", "analyses"} <= set(parsers)
    for name, p in parsers.items():
        assert issubclass(p.formatter_class, argparse.ArgumentDefaultsHelpFormatter), name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.dest == "_parser":
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings}: no help"
            assert "(default" not in action.help, f"{name} {action.option_strings}: a second default"
        text = p.format_help()
        assert "--lr " not in text or "(default: 0.001)" in " ".join(text.split()), name


BAD = [
    (["study", "--backend", "nope"], "unknown backend 'nope'"),
    (["demo", "--tasks", "sine", "weather"], "invalid choice: 'weather'"),
    (["demo", "--models", "transformer"], "invalid choice: 'transformer'"),
    (["study", "--seeds", "0"], "'0' is not a positive integer"),
    (["demo", "--lr", "-1"], "'-1' is not a positive number"),
    (["demo", "--hidden", "10", "--compartments", "4"], "--compartments 4 must divide --hidden 10"),
    (["demo", "--match-params", "--models", "lstm", "gru"], "include the 'diru' model"),
    (["train", "--device", "gpu"], "'gpu' is not a device"),
    (["train", "--epochs", "1.5"], "'1.5' is not a positive integer"),
    (["train", "--patience", "-2"], "'-2' is not an integer >= 0"),
    (["train", "--task", "weather"], "invalid choice: 'weather'"),
    (["train", "--resume-from", "no/such/checkpoint.pt"], "no such file"),
    (["specialization", "--ks", "3"], "divide hidden_size 64"),
    (["gradient-flow", "--norm", "1"], "invalid choice: '1'"),
    (["gradient-flow", "--models", "diru", "transformer"], "invalid choice: 'transformer'"),
    (["memory-capacity", "--seeds", "-1"], "'-1' is not a positive integer"),
    (["analyses", "--backend", "nope"], "unknown backend 'nope'"),
    (["analyses", "--only", "weather"], "invalid choice: 'weather'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_are_usage_errors_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        cli.main(argv + ["--out", str(out), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: diru_fast " in err and "error:" in err and message in err, err
    assert not out.exists()  # nothing started


def test_an_unavailable_backend_is_a_usage_error(tmp_path, capsys, monkeypatch):
    from diru_fast import backends

    monkeypatch.setitem(backends._PROVIDER_MODULES, "cpu", "diru_fast.providers._missing_for_test")
    backends._reset_for_tests()  # as on a machine where the C++ kernel could not be built
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--backend", "cpu", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "backend 'cpu' cannot run here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

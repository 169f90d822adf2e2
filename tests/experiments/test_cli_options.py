"""DIRU's cell options on the command line (train, study, demo): parsing, usage errors, and that they
reach every DIRU a command builds (not the baselines) and are recorded in its config."""

import json

import pytest
import torch

from diru_fast import cli, reference
from diru_fast.experiments.models import ModelSpec, build_model, diru_params
from diru_fast.experiments.options import DIRUOptions
from diru_fast.experiments.study import StudyConfig

TINY = ["--n-train", "16", "--n-val", "8", "--seq-len", "8", "--hidden", "12", "--batch-size", "8", "--quiet",
        "--device", "cpu", "--backend", "torch"]
OPTIONS = ["--activation", "relu", "--compartment-attention", "--compartment-sizes", "5,7",
           "--compartment-dropout", "0.25"]
EXPECTED = {"activation": "relu", "compartment_sizes": [5, 7], "compartment_attention": True,
            "compartment_dropout": 0.25}


@pytest.mark.parametrize("command", ["train", "study", "demo"])
def test_options_parse(command):
    args = cli.build_parser().parse_args([command] + OPTIONS)
    assert (args.activation, args.compartment_sizes, args.compartment_attention, args.compartment_dropout) == \
        ("relu", (5, 7), True, 0.25)
    plain = cli.build_parser().parse_args([command])
    assert (plain.activation, plain.compartment_sizes, plain.compartment_attention, plain.compartment_dropout) == \
        ("tanh", None, False, 0.0)


BAD = [
    (["train", "--activation", "gelu"], "invalid choice: 'gelu'"),
    (["train", "--compartment-sizes", "5,,7"], "comma-separated list of positive integers"),
    (["study", "--compartment-sizes", "0,64"], "every compartment size must be positive"),
    (["demo", "--compartment-dropout", "1"], "must lie in [0, 1)"),
    (["train", "--compartment-dropout", "-0.1"], "must lie in [0, 1)"),
    (["train", "--compartment-sizes", "5,7"], "--compartment-sizes 5,7 sum to 12, not --hidden 64"),
    (["study", "--hidden", "12", "--compartments", "3", "--compartment-sizes", "5,7"],
     "--compartments 3 disagrees with --compartment-sizes 5,7 (2 compartments)"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_are_usage_errors(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        cli.main(argv + ["--out", str(out), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert not out.exists()


def test_train_builds_the_options_and_records_them(tmp_path):
    argv = ["train", "--task", "sine", "--epochs", "1", "--out", str(tmp_path / "diru")] + TINY + OPTIONS
    assert cli.main(argv) == 0
    hist = json.loads((tmp_path / "diru" / "history.json").read_text())
    assert {k: hist["model_spec"][k] for k in EXPECTED} == EXPECTED
    assert hist["model_spec"]["num_compartments"] == 2
    ckpt = torch.load(tmp_path / "diru" / "checkpoint.pt", weights_only=True)
    assert ckpt["model_state"]["cells.0.compartment_attention.weight"].shape == (2, 1 + 12)
    # the checkpoint's spec rebuilds the same cell: its keys load into the reference model built with the options
    spec = ModelSpec(**ckpt["model_spec"])
    assert spec.options == DIRUOptions("relu", (5, 7), True, 0.25)
    ref = reference.DIRU(1, 12, 1, activation="relu", compartment_sizes=[5, 7], compartment_attention=True)
    ref.load_state_dict(ckpt["model_state"])
    # a baseline ignores them (and records the plain defaults)
    argv = (["train", "--task", "sine", "--model", "gru", "--epochs", "1", "--out", str(tmp_path / "gru")]
            + TINY + OPTIONS)
    assert cli.main(argv) == 0
    spec = json.loads((tmp_path / "gru" / "history.json").read_text())["model_spec"]
    assert spec["kind"] == "gru" and spec["compartment_attention"] is False and spec["compartment_sizes"] is None


def test_study_passes_the_options_to_diru_only(tmp_path):
    argv = ["demo", "--out", str(tmp_path), "--tasks", "sine", "--models", "diru", "gru", "--seeds", "1",
            "--epochs", "1", "--no-plots"] + TINY + OPTIONS
    assert cli.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["options"] == EXPECTED and results["config"]["num_compartments"] == 2
    params = {r["kind"]: r["params"] for r in results["runs"]}
    want = build_model("diru", 1, 12, 1, options=DIRUOptions("relu", (5, 7), True, 0.25))
    gru = build_model("gru", 1, 12, 1, options=DIRUOptions("relu", (5, 7), True, 0.25))
    assert params["diru"] == sum(p.numel() for p in want.parameters())
    assert params["gru"] == sum(p.numel() for p in gru.parameters())
    assert "attention over compartments" in (tmp_path / "report.md").read_text()


def test_options_in_the_library():
    opts = DIRUOptions(compartment_attention=True)
    assert opts.kwargs() == {"compartment_attention": True} and DIRUOptions().kwargs() == {}
    assert DIRUOptions.from_dict(opts.to_dict()) == opts
    k = 4
    assert diru_params(1, 64, 1, k, opts) - diru_params(1, 64, 1, k) == k * (1 + 64 + 1)  # A [k, n+d] and a [k]
    state = torch.random.get_rng_state()
    assert diru_params(1, 12, 1, 2, DIRUOptions(compartment_sizes=(5, 7))) == diru_params(1, 12, 1, 2)
    assert torch.equal(torch.random.get_rng_state(), state)  # counting draws nothing from the global RNG
    # an old config (written before the options) reads back as the plain cell, and resumes
    old = StudyConfig().to_dict()
    del old["options"]
    assert StudyConfig.from_dict(old).options == DIRUOptions()
    assert StudyConfig.from_dict(StudyConfig(options=opts).to_dict()).options == opts
    with pytest.raises(ValueError, match="activation"):
        DIRUOptions(activation="gelu")
    with pytest.raises(ValueError, match="sum to 11, not the hidden size 12"):
        StudyConfig(hidden_size=12, options=DIRUOptions(compartment_sizes=(5, 6)))


def test_a_backend_without_the_options_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """Asked for explicitly, a backend whose kernels do not fuse an option is refused before any work."""
    from diru_fast import backends

    monkeypatch.setattr(backends, "provider_options", lambda name: frozenset())
    for argv in (["train", "--backend", "cpu", "--compartment-attention"],
                 ["specialization", "--backend", "cpu", "--activation", "relu"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv + ["--out", str(tmp_path / "out"), "--quiet"])
        assert exc.value.code == 2 and "does not fuse the option(s)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

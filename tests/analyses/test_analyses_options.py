"""DIRU's cell options in the analyses: parsed by every analysis command, validated, passed to
every DIRU an analysis builds (not to the baselines), recorded in the result's config; the
compartment outputs of an attention cell are the scaled ones the cell integrates."""

import json

import pytest
import torch

from diru_fast import DIRU, cli, reference
from diru_fast.analyses.common import build, model_options, prototype_copy
from diru_fast.analyses.specialization import compartment_outputs
from diru_fast.experiments.options import DIRUOptions

TINY_SPEC = ["--ks", "2", "--seeds", "1", "--n-train", "16", "--n-val", "8", "--seq-len", "24", "--hidden-size", "8",
             "--epochs", "1", "--n-perm", "10", "--burn-in", "4", "--n-test", "8", "--lr-grid", "0.001", "0.01",
             "--tune-seeds", "1", "--tune-k", "2"]
TINY_MEM = ["--ks", "1", "2", "--seq-lens", "12", "--seeds", "1", "--n-train", "16", "--n-val", "8",
            "--hidden-size", "4", "--epochs", "1", "--n-test", "8", "--lr-grid", "0.001", "0.01", "--tune-seeds", "1"]


@pytest.mark.parametrize("command", ["specialization", "gradient-flow", "memory-capacity", "real-data", "analyses"])
def test_every_analysis_command_takes_the_options(command):
    args = cli.build_parser().parse_args([command, "--compartment-attention", "--activation", "relu",
                                          "--compartment-dropout", "0.1"])
    assert (args.compartment_attention, args.activation, args.compartment_dropout) == (True, "relu", 0.1)


BAD = [
    (["specialization", "--compartment-sizes", "30,34"], "compartment sizes are not supported here"),
    (["memory-capacity", "--compartment-sizes", "30,34"], "fix k = 2: pass ks 2 alone"),
    (["memory-capacity", "--ks", "2", "--compartment-sizes", "30,30"], "sum to 60, not the hidden size 64"),
    (["gradient-flow", "--compartment-sizes", "30,34"], "give 2 compartments, not 4"),
    (["analyses", "--compartment-dropout", "1.5"], "must lie in [0, 1)"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_are_usage_errors(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        cli.main(argv + ["--out", str(out), "--quiet"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_attention_runs_are_recorded(tmp_path):
    for command, argv in (("specialization", TINY_SPEC), ("memory-capacity", TINY_MEM)):
        assert cli.main([command, "--out", str(tmp_path), "--quiet", "--no-plots", "--backend", "torch",
                         "--compartment-attention"] + argv) == 0
    spec = json.loads((tmp_path / "specialization.json").read_text())
    assert spec["config"]["options"]["compartment_attention"] is True
    assert "--compartment-attention" in spec["meta"]["command"]
    mem = json.loads((tmp_path / "memory_capacity.json").read_text())
    assert mem["config"]["options"]["compartment_attention"] is True
    d, n = 4, 1
    plain_k2 = sum(p.numel() for p in build("diru", n, d, 1, num_compartments=2).parameters())
    assert mem["params_by_k"]["2"] == [plain_k2 + 2 * (n + d + 1)]  # the attention rows A [k, n+d], a [k]
    rnn = [r for r in mem["runs"] if r["model"] == "rnn"]
    assert rnn and rnn[0]["params"] == sum(p.numel() for p in build("rnn", n, d, 1).parameters())
    assert "## 1. Compartments specialize" in (tmp_path / "ANALYSES.md").read_text()
    assert spec["summary"]["exchangeable"] is False  # attention singles the blocks out
    matched = [r for r in mem["runs"] if r["model"] == "rnn_matched"]
    assert matched and abs(matched[0]["params"] - mem["params_by_k"]["1"][0]) <= 2 * matched[0]["hidden_size"] + 4


def test_variant_folders_are_reported_under_each_analysis(tmp_path):
    """The attention runs are generated into the main report from their own JSON (--variant)."""
    plain, att = tmp_path / "plain", tmp_path / "att"
    assert cli.main(["specialization", "--out", str(plain), "--quiet", "--no-plots", "--backend", "torch"] + TINY_SPEC) == 0
    assert cli.main(["specialization", "--out", str(att), "--quiet", "--no-plots", "--backend", "torch",
                     "--compartment-attention"] + TINY_SPEC) == 0
    report = tmp_path / "A.md"
    assert cli.main(["analyses", "--report-only", "--out", str(plain), "--report", str(report), "--variant", str(att)]) == 0
    text = report.read_text()
    assert text.count("### 1b. Compartments specialize to different frequencies, with attention over compartments") == 1
    assert "| … with attention over compartments: compartments specialize" in text
    assert "](att/specialization.png)" in text and "--compartment-attention" in text
    assert text.count("**Verdict: does not hold** (by the symmetry argument).") == 1  # the plain cell only


@pytest.mark.parametrize("options", [DIRUOptions(compartment_attention=True),
                                     DIRUOptions(activation="relu", compartment_attention=True,
                                                 compartment_dropout=0.3),
                                     DIRUOptions(activation="relu", compartment_sizes=(3, 5))])
def test_prototype_copy_keeps_the_options(options):
    torch.manual_seed(0)
    model = build("diru", 2, 8, 1, num_compartments=2, backend="torch", options=options).double().eval()
    copy = prototype_copy(model)
    assert model_options(model) == options == model_options(copy)
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(copy.eval()(x), model(x), rtol=1e-12, atol=1e-12)


def test_compartment_outputs_are_the_attention_scaled_outputs():
    """With attention, o is what the cell integrates: z_t = tanh(W_I o_t + b_I) along the trajectory."""
    torch.manual_seed(1)
    model = DIRU(1, 8, 1, num_compartments=4, compartment_attention=True, backend="torch").double()
    with torch.no_grad():  # non-zero attention logits, so alpha is not uniform
        model.rnn.cell_weights().w_hh[-4:].normal_()
    x = torch.randn(2, 6, 1, dtype=torch.float64)
    o, h = compartment_outputs(model, x)  # [B, T, k, m], [B, T, d]
    cell = prototype_copy(model).cells[0]
    h_prev = torch.cat([h.new_zeros(2, 1, 8), h[:, :-1]], 1)
    for t in range(6):
        torch.testing.assert_close(cell(x[:, t], h_prev[:, t]), h[:, t], rtol=1e-12, atol=1e-12)
    plain = torch.stack([c(x.reshape(12, 1), h_prev.reshape(12, 8)) for c in cell.compartments], 1).view(2, 6, 4, 2)
    assert not torch.allclose(o, plain)  # the scaling is applied
    scale = o / plain  # k * alpha_c, the same for every unit of a compartment, summing to k over c
    torch.testing.assert_close(scale[..., 0].sum(-1), torch.full((2, 6), 4.0, dtype=torch.float64))
    torch.testing.assert_close(scale, scale[..., :1].expand_as(scale))
    assert isinstance(prototype_copy(model), reference.DIRU)

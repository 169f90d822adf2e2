"""The word-level language model (diru_fast.experiments.lm), its benchmark and stability sweep, at tiny
sizes on a corpus written here, and the committed Shakespeare corpus's shape."""

import argparse
import json
import math

import pytest
import torch

from diru_fast.experiments import lm, lm_study, stability

TEXT = ["the king is dead .", "long live the king !", "the queen is here , and the king is not ."] * 12


@pytest.fixture
def corpus_dir(tmp_path):
    for name, lines in (("train", TEXT), ("valid", TEXT[:6] + ["a stranger word ."]), ("test", TEXT[3:9])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_corpus_vocabulary_unk_and_batchify(corpus_dir):
    c = lm.load_corpus(corpus_dir)
    assert c.words[:2] == ["<eos>", "<unk>"]
    assert set(c.words) == {"<eos>", "<unk>"} | {w for line in TEXT for w in line.split()}
    # 'a', 'stranger', 'word' never occur in train -> <unk>; every line ends with <eos>
    assert (c.valid == 1).sum() == 3 and (c.valid == 0).sum() == 7
    assert c.train.numel() == sum(len(line.split()) + 1 for line in TEXT)
    b = lm.batchify(torch.arange(23), 4)  # [5, 4]: 4 streams, remainder dropped
    assert b.shape == (5, 4) and b[:, 1].tolist() == [5, 6, 7, 8, 9]
    assert lm.load_corpus(corpus_dir, max_train_tokens=10).train.numel() == 10
    # unigram: add-one smoothed frequencies of train
    counts = torch.bincount(c.train, minlength=c.vocab_size).double() + 1
    assert lm.unigram_loss(c, "test") == pytest.approx(float(-(counts / counts.sum()).log()[c.test].mean()))


def test_shipped_corpus_loads():
    c = lm.load_corpus(max_train_tokens=2000, max_eval_tokens=500)
    assert c.train.numel() == 2000 and c.valid.numel() == 500 and c.test.numel() == 500
    assert (lm.CORPUS_DIR / "README.md").read_text().count("public domain") >= 1


@pytest.mark.parametrize("cell", lm.CELLS)
def test_train_lm_tiny_learns_and_records_diagnostics(corpus_dir, cell):
    c = lm.load_corpus(corpus_dir)
    cfg = lm.LMConfig(cell=cell, emsize=8, nhid=8, bptt=5, batch_size=4, epochs=3, optimizer="adam", lr=0.03,
                      clip=0.25)
    diag = lm.Diagnostics(every=1)
    r = lm.train_lm(cfg, c, diag)
    assert len(r.valid_loss) == 3 and all(math.isfinite(v) for v in r.valid_loss)
    assert not r.diverged and r.trains  # a repeated text: far better than word frequencies
    assert r.best_valid == min(r.valid_loss) and math.isfinite(r.test_at_best)
    blocks = {"diru": 5, "lstm": 4, "gru": 3}[cell] * 2  # recurrent blocks per layer x 2 layers
    assert len(diag.sigma_max[0]) == blocks and len(diag.block_grad[0]) == blocks
    assert len(diag.steps) == len(diag.saturated) > 0 and all(0 <= s <= 1 for s in diag.saturated)
    tied = lm.RNNModel(cell, c.vocab_size, 8, 8, tied=True)
    assert tied.decoder.weight is tied.encoder.weight


def test_divergence_is_detected(corpus_dir):
    """A huge unclipped SGD step sends the loss past the uniform guess (or to inf): 'diverged'."""
    c = lm.load_corpus(corpus_dir)
    r = lm.train_lm(lm.LMConfig(cell="gru", emsize=8, nhid=8, bptt=5, batch_size=4, epochs=1, lr=1e4, clip=0), c)
    assert r.diverged and not r.trains


def test_lm_verdicts_rules():
    uni = 6.0  # a model learned when its mean loss <= 6 - log 2
    losses = {"diru": [5.0, 5.1, 5.05], "lstm": [5.2, 5.32, 5.24], "gru": [5.02, 5.09, 5.06]}
    rows = {r["other"]: r for r in lm_study.verdicts(losses, uni)}
    assert rows["lstm"]["verdict"] == "DIRU better" and rows["lstm"]["ratio"] < 1
    assert rows["gru"]["verdict"] == "no difference detected"
    assert lm_study.verdicts({"diru": [5.9, 5.95], "lstm": [5.8, 5.9]}, uni)[0]["verdict"] == "not learned"
    assert lm_study.verdicts({"diru": [5.9, 5.95], "lstm": [5.0, 5.1]}, uni)[0]["verdict"] == "only lstm learned"


def test_lm_and_stability_cli_end_to_end(corpus_dir, tmp_path):
    p = argparse.ArgumentParser()
    lm_study.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "lm"), "--corpus", str(corpus_dir), "--lrs", "0.01,0.03",
                         "--optimizer", "adam", "--seeds", "0,1", "--epochs", "1", "--size", "8", "--cells", "diru,gru", "--time-chunks", "2"])
    assert lm_study.run(args) == 0
    report = (tmp_path / "lm" / "report.md").read_text()
    assert report.index("## Rules") < report.index("## Tuning") < report.index("## Test") < report.index("## Verdicts")
    assert "| diru |" in report[report.index("## Time per epoch"):]
    runs = [json.loads(x) for x in (tmp_path / "lm" / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["phase"], r["config"]["cell"]) for r in runs).count(("tune", "diru")) == 2 and len(runs) == 8
    p = argparse.ArgumentParser()
    stability.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "st"), "--corpus", str(corpus_dir), "--cells", "diru",
                         "--optimizers", "sgd", "--sgd-lrs", "1,1e4", "--clips", "0", "--epochs", "1", "--size", "8"])
    assert stability.run(args) == 0
    text = (tmp_path / "st" / "report.md").read_text()
    assert text.index("## Rules") < text.index("## Stable range") and "| diru | sgd | 0 |" in text
    assert "| diru | sgd | 0 | 10000 | div |" in text

"""DistributedDataParallel under torchrun: 2 CPU processes (gloo, loopback) train one model; the
weights agree across ranks and equal a single process trained on the same global batches."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from diru_fast import cli

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["train", "--task", "sine", "--model", "diru", "--n-train", "64", "--n-val", "16", "--seq-len", "12",
        "--hidden", "8", "--compartments", "2", "--batch-size", "16", "--epochs", "2", "--dtype", "float64",
        "--quiet", "--device", "cpu", "--backend", "torch", "--threads", "1"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch build has no torch.distributed gloo backend")
def test_torchrun_two_cpu_ranks_match_single_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "diru_fast"] + ARGS + ["--out", str(tmp_path / "ddp"), "--save-all-ranks"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert cli.main(ARGS + ["--out", str(tmp_path / "single")]) == 0

    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    r0, r1 = load(tmp_path / "ddp" / "checkpoint.rank0.pt"), load(tmp_path / "ddp" / "checkpoint.rank1.pt")
    single = load(tmp_path / "single" / "checkpoint.pt")
    assert r0["extra"]["world_size"] == 2 and single["extra"]["world_size"] == 1
    # each rank trained on its half of every global batch (the sharding really happened) ...
    assert r0["history"]["local_samples"] == r1["history"]["local_samples"] == [32, 32]
    assert single["history"]["local_samples"] == [64, 64]
    # ... and the averaged gradients kept the ranks identical and equal to one process on the whole batch
    for key, w in single["model_state"].items():
        torch.testing.assert_close(r0["model_state"][key], r1["model_state"][key], rtol=0, atol=1e-14)
        torch.testing.assert_close(r0["model_state"][key], w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(r0["history"]["val_loss"]), torch.tensor(single["history"]["val_loss"]),
                               rtol=1e-10, atol=0)

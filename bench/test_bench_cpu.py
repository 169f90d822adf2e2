"""pytest-benchmark suite: DIRU backends vs torch.nn.LSTM on CPU.

    DIRU_BENCH_THREADS=2 python -m pytest bench/test_bench_cpu.py --benchmark-json=raw.json
    python bench/report.py raw.json --out bench/results --name cpu

Each case is one training step (forward + MSE + backward) or one no-grad forward of
``diru_fast.DIRU`` on one backend, or of ``diru_fast.baselines.LSTMModel`` (nn.LSTM + head) of the same
n, d, dtype and thread count. No timing is asserted: the report turns the run into ratios.
"""

import warnings

import pytest
import torch

from diru_fast import available_backends, benchmarking as bm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    IMPLS = [bm.BASELINE] + available_backends("cpu")


@pytest.mark.parametrize("mode", bm.MODES)
@pytest.mark.parametrize("shape", list(bm.SHAPES))
@pytest.mark.parametrize("impl", IMPLS)
def test_step(benchmark, impl, shape, mode):
    case = bm.build_case(impl, shape, mode)
    case.step()  # warm-up (and first-use builds) outside the timing
    benchmark.group = f"{shape}-{mode}"
    benchmark.extra_info.update(impl=impl, shape=shape, mode=mode, threads=torch.get_num_threads(), **case.info)
    if mode == "train":
        benchmark.extra_info["saved_bytes"] = bm.saved_activation_bytes(case)
    rounds = 5 if impl == "reference" else 20
    benchmark.pedantic(case.step, rounds=rounds, iterations=1, warmup_rounds=2)

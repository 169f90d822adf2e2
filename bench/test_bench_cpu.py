"""pytest-benchmark suite: DIRU backends vs torch.nn.LSTM on CPU.

    DIRU_BENCH_THREADS=2 python -m pytest bench/test_bench_cpu.py --benchmark-json=raw.json
    python bench/report.py raw.json --out bench/results --name cpu

The cases are ``diru_fast.benchmarking.CASES``: a training step and a no-grad forward of
``diru_fast.DIRU`` at two shapes, a streaming step of ``diru_fast.DIRUCell`` at B=1, and one
prototype-size training epoch with Adam, each on every DIRU backend and on its torch.nn counterpart
(nn.LSTM + the same head, or nn.LSTMCell) of the same n, d, dtype and thread count. No timing is
asserted: the report turns the run into ratios.

Each DIRU case also runs its torch.nn counterpart once before every timed round (pytest-benchmark's
``setup``, timed here), and records the median of the per-round ratios (``ratio_vs_lstm``): both
sides of each ratio are measured seconds apart, so the drift of a shared machine cancels.

``test_option``: the cell options (``diru_fast.benchmarking.OPTION_VARIANTS``: relu, attention over
k = 4 compartments, dropout 0.1, time decay, all four) at ``OPTION_CASES`` (prototype and large shapes,
training step and no-grad forward) on the ``auto`` backend (``DIRU_FAST_CPU_ISA=avx2`` times the C++
kernel's AVX2 path on an AVX-512 machine; on a loaded machine ``--benchmark-timer time.process_time``
pairs CPU times instead of wall times, both sides of each ratio on the same clock), each round paired
the same way with a round of the plain DIRU (``ratio_vs_plain``); the plain DIRU itself is timed once
more as the table's reference.
"""

import os
import statistics
import time
import warnings

import pytest
import torch

from diru_fast import available_backends, benchmarking as bm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    IMPLS = [bm.BASELINE] + available_backends("cpu")


@pytest.mark.parametrize("shape, mode", bm.CASES, ids=[f"{s}-{m}" for s, m in bm.CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_step(benchmark, impl, shape, mode):
    case = bm.build_case(impl, shape, mode)
    case.step()  # warm-up (and first-use builds) outside the timing
    baseline = None if impl == bm.BASELINE else bm.build_case(bm.BASELINE, shape, mode)
    base_times = []

    def run_baseline():  # untimed by pytest-benchmark: the paired round of the torch.nn counterpart
        if baseline is not None:
            start = time.perf_counter()
            baseline.step()
            base_times.append(time.perf_counter() - start)

    benchmark.group = f"{shape}-{mode}"
    benchmark.extra_info.update(impl=impl, shape=shape, mode=mode, threads=torch.get_num_threads(), **case.info)
    if mode == "train":
        benchmark.extra_info["saved_bytes"] = bm.saved_activation_bytes(case)
    if mode == "epoch":
        rounds = 3 if impl == "reference" else 7
    elif mode == "step":
        rounds = 200 if impl != "reference" else 50
    else:
        rounds = 5 if impl == "reference" else 20
    warmup = 2 if mode != "step" else 20
    benchmark.pedantic(case.step, setup=run_baseline, rounds=rounds, iterations=1, warmup_rounds=warmup)
    if baseline is not None:
        times = benchmark.stats.stats.data
        ratios = [t / b for t, b in zip(times, base_times[warmup:])]
        benchmark.extra_info["ratio_vs_lstm"] = statistics.median(ratios)
        benchmark.extra_info["lstm_paired_median_s"] = statistics.median(base_times[warmup:])


OPTION_IDS = [f"{s}-{m}" for s, m in bm.OPTION_CASES]


@pytest.mark.parametrize("shape, mode", bm.OPTION_CASES, ids=OPTION_IDS)
@pytest.mark.parametrize("variant", list(bm.OPTION_VARIANTS))
def test_option(benchmark, variant, shape, mode):
    impl = bm.OPTION_BACKEND
    case = bm.build_case(impl, shape, mode, variant=variant)
    case.step()  # warm-up outside the timing
    plain = None if variant == bm.PLAIN else bm.build_case(impl, shape, mode, variant=bm.PLAIN)
    plain_times = []
    clock = getattr(benchmark, "_timer", time.perf_counter)  # the suite's timer (--benchmark-timer)

    def run_plain():  # untimed by pytest-benchmark: the paired round of the plain DIRU
        if plain is not None:
            start = clock()
            plain.step()
            plain_times.append(clock() - start)

    benchmark.group = f"options-{shape}-{mode}"
    benchmark.extra_info.update(impl=impl, shape=shape, mode=mode, threads=torch.get_num_threads(),
                                resolved_backend=bm.resolved_backend(case), **case.info)
    warmup = 2
    rounds = int(os.environ.get("DIRU_BENCH_OPTION_ROUNDS", "20"))  # paired rounds; more on a quiet machine
    benchmark.pedantic(case.step, setup=run_plain, rounds=rounds, iterations=1, warmup_rounds=warmup)
    if plain is not None:
        ratios = [t / b for t, b in zip(benchmark.stats.stats.data, plain_times[warmup:])]
        benchmark.extra_info["ratio_vs_plain"] = statistics.median(ratios)
        benchmark.extra_info["plain_paired_median_s"] = statistics.median(plain_times[warmup:])

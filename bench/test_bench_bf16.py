"""bfloat16 on CPU: diru_fast.DIRU on the cpu backend against nn.LSTM (+ the same head), both in bfloat16.

    DIRU_BENCH_THREADS=2 python -m pytest bench/test_bench_bf16.py --benchmark-json=raw.json
    python bench/test_bench_bf16.py [THREADS] [ROUNDS] > bench/results/bf16-cpu-2t.md    (the table)

Cases: a training step and a no-grad forward (diru_fast.benchmarking's "train" and "infer" modes) at
the prototype shape (B=32 T=50 n=1 d=64) and at B=32 T=100 n=64 d=256 ("bf16wide"). Every round of
DIRU is paired with a round of nn.LSTM just before it (the suite's ``setup``, as in test_bench_cpu.py),
and the ratio is the median of the per-round ratios, so the drift of a shared machine cancels. The
table also gives the ratio of the two fastest rounds (the least disturbed ones on a loaded machine).
No timing is asserted.
"""

import statistics
import sys
import time
import warnings

import pytest
import torch

from diru_fast import benchmarking as bm

bm.SHAPES.setdefault("bf16wide", dict(B=32, T=100, n=64, d=256, k=4))
CASES = [("bf16wide", "infer"), ("bf16wide", "train"), ("prototype", "infer"), ("prototype", "train")]
IMPL = "cpu"


def _cases(shape, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (bm.build_case(IMPL, shape, mode, dtype=torch.bfloat16),
                bm.build_case(bm.BASELINE, shape, mode, dtype=torch.bfloat16))


@pytest.mark.parametrize("shape, mode", CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_bfloat16(benchmark, shape, mode):
    case, baseline = _cases(shape, mode)
    case.step()  # warm-up (and first-use builds) outside the timing
    baseline.step()
    base_times = []

    def run_baseline():  # untimed by pytest-benchmark: the paired round of nn.LSTM
        start = time.perf_counter()
        baseline.step()
        base_times.append(time.perf_counter() - start)

    benchmark.group = f"bf16-{shape}-{mode}"
    benchmark.extra_info.update(impl=IMPL, shape=shape, mode=mode, threads=torch.get_num_threads(), **case.info)
    warmup = 2
    benchmark.pedantic(case.step, setup=run_baseline, rounds=30, iterations=1, warmup_rounds=warmup)
    ratios = [t / b for t, b in zip(benchmark.stats.stats.data, base_times[warmup:])]
    benchmark.extra_info["ratio_vs_lstm"] = statistics.median(ratios)
    benchmark.extra_info["lstm_paired_median_s"] = statistics.median(base_times[warmup:])


def table(rounds: int = 40) -> str:
    """The markdown table: per case the medians, the median paired ratio with its quartiles, and the
    ratio of the two fastest rounds."""
    from diru_fast.providers import cpu

    ext = cpu.extension()
    lines = [f"threads={torch.get_num_threads()}, rounds={rounds}, float32 ISA {ext.isa()}, bfloat16 products "
             f"{ext.bf16_isa()}, torch {torch.__version__}", "",
             "| shape | mode | nn.LSTM bf16 | DIRU bf16 (cpu) | ratio: median of paired rounds [quartiles] "
             "| ratio of the fastest rounds |", "|---|---|---|---|---|---|"]
    for shape, mode in CASES:
        case, baseline = _cases(shape, mode)
        for _ in range(3):
            baseline.step()
            case.step()
        ours, base = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            baseline.step()
            base.append(time.perf_counter() - start)
            start = time.perf_counter()
            case.step()
            ours.append(time.perf_counter() - start)
        ratios = sorted(a / b for a, b in zip(ours, base))
        q = lambda p: ratios[int(p * (len(ratios) - 1))]  # noqa: E731
        s = bm.SHAPES[shape]
        lines.append(f"| B={s['B']} T={s['T']} n={s['n']} d={s['d']} | {mode} | {1e3 * statistics.median(base):.2f} ms "
                     f"| {1e3 * statistics.median(ours):.2f} ms | {statistics.median(ratios):.2f}x "
                     f"[{q(0.25):.2f}-{q(0.75):.2f}] | {min(ours) / min(base):.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    print(table(int(sys.argv[2]) if len(sys.argv) > 2 else 40))

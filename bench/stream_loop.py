"""Streaming steps in a tight loop: ``DIRUCell`` vs ``nn.LSTMCell`` under ``torch.inference_mode()``,
B=1, alternating blocks of 300 calls of each, 15 blocks; prints the median time per call and the
median of the per-block ratios. A check of the benchmark suite's paired single-call rounds
(bench/test_bench_cpu.py), whose per-call times include the timer and the round's setup.

    python bench/stream_loop.py [THREADS]
"""

import statistics
import sys
import time

import torch

import diru_fast


def main(threads: int) -> None:
    torch.set_num_threads(threads)
    for n, d in ((1, 64), (16, 256)):
        cell, lstm = diru_fast.DIRUCell(n, d).eval(), torch.nn.LSTMCell(n, d).eval()
        x = torch.randn(1, n)  # [B, n]

        def run_diru(calls: int) -> None:
            h = torch.zeros(1, d)  # [B, d]
            for _ in range(calls):
                h = cell(x, h)

        def run_lstm(calls: int) -> None:
            state = (torch.zeros(1, d), torch.zeros(1, d))
            for _ in range(calls):
                state = lstm(x, state)

        t_diru, t_lstm = [], []
        with torch.inference_mode():
            for _ in range(15):
                t0 = time.perf_counter()
                run_lstm(300)
                t1 = time.perf_counter()
                run_diru(300)
                t2 = time.perf_counter()
                t_lstm.append((t1 - t0) / 300)
                t_diru.append((t2 - t1) / 300)
        ratio = statistics.median(a / b for a, b in zip(t_diru, t_lstm))
        print(f"n={n} d={d} threads={threads}: DIRUCell {statistics.median(t_diru) * 1e6:.1f} us, "
              f"nn.LSTMCell {statistics.median(t_lstm) * 1e6:.1f} us per step, ratio {ratio:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

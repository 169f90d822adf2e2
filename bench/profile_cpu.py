"""Ad-hoc timing and profile of the fused C++ CPU backend against torch.nn.LSTM.

Not the benchmark suite (bench/ on main owns that): this script answers "where does the
time go" while tuning, and prints the numbers quoted in the cpu backend's report.

    PYTHONPATH=. python bench/profile_cpu.py                 # step times, ratios (default shapes)
    PYTHONPATH=. python bench/profile_cpu.py --profile       # + torch.profiler op table, DIRU-cpu
    PYTHONPATH=. python bench/profile_cpu.py --kernel        # + the bare C++ scan, per step
    PYTHONPATH=. python bench/profile_cpu.py --memory        # + peak RSS per model, fresh processes
    PYTHONPATH=. python bench/profile_cpu.py --epoch         # + one prototype-size epoch, DIRU-cpu vs LSTM
    PYTHONPATH=. python bench/profile_cpu.py --threads 1 --cpu-time   # CPU seconds: for a busy machine

Every timing is the median over --repeats rounds, models interleaved within a round, all in
one process with torch's thread count (--threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import diru_fast
from diru_fast import DIRU
from diru_fast.baselines import LSTMModel

SHAPES = [(32, 50, 64), (32, 200, 128)]  # (B, T, d), n = 1, k = 4


def make(name: str, d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "lstm":
        return LSTMModel(1, d, 1)
    return DIRU(1, d, 1, backend=name)


def train_step(model, x, y):
    def run():
        model.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
    return run


def forward_only(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


CLOCK = time.perf_counter  # --cpu-time: time.process_time (CPU seconds of this process)


def timed(fn, inner: int) -> float:
    t0 = CLOCK()
    for _ in range(inner):
        fn()
    return (CLOCK() - t0) / inner


def compare(B, T, d, names, repeats, budget_s=0.05):
    """Median seconds per call of train step and no-grad forward, models interleaved."""
    x, y = torch.randn(B, T, 1), torch.randn(B, 1)
    models = {n: make(n, d) for n in names}
    fns = {}
    for n, m in models.items():
        fns[(n, "train")] = train_step(m, x, y)
        fns[(n, "fwd")] = forward_only(m, x)
    inner = {}
    for key, fn in fns.items():  # warm up, then size each round to ~budget_s
        for _ in range(3):
            fn()
        once = timed(fn, 1)
        inner[key] = max(1, min(200, int(budget_s / max(once, 1e-6))))
    samples = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            samples[key].append(timed(fn, inner[key]))
    return {key: statistics.median(v) for key, v in samples.items()}


def report_times(args):
    rows = []
    for B, T, d in SHAPES:
        names = ["lstm", "cpu", "torch"] + (["reference"] if T <= 50 else [])
        med = compare(B, T, d, names, args.repeats)
        lstm_train, lstm_fwd = med[("lstm", "train")], med[("lstm", "fwd")]
        print(f"\nB={B} T={T} d={d} n=1 k=4  threads={torch.get_num_threads()}  (median of {args.repeats})")
        print(f"{'model':>10} {'train ms':>9} {'x LSTM':>7} {'fwd ms':>8} {'x LSTM':>7}")
        for n in names:
            tr, fw = med[(n, "train")], med[(n, "fwd")]
            print(f"{n:>10} {tr * 1e3:9.3f} {tr / lstm_train:7.2f} {fw * 1e3:8.3f} {fw / lstm_fwd:7.2f}")
            rows.append(dict(B=B, T=T, d=d, model=n, train_ms=tr * 1e3, fwd_ms=fw * 1e3,
                             train_vs_lstm=tr / lstm_train, fwd_vs_lstm=fw / lstm_fwd))
        if "reference" in names:
            print(f"  cpu is {med[('reference', 'train')] / med[('cpu', 'train')]:.1f}x faster than reference (train)")
    return rows


def report_profile(args):
    from torch.profiler import ProfilerActivity, profile
    for B, T, d in SHAPES:
        x, y = torch.randn(B, T, 1), torch.randn(B, 1)
        for name in ("cpu", "lstm"):
            step = train_step(make(name, d), x, y)
            for _ in range(5):
                step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(20):
                    step()
            print(f"\n=== torch.profiler, {name}, B={B} T={T} d={d}: 20 train steps ===")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def report_kernel(args):
    """The bare C++ scan (no Python layers): what the recurrence itself costs."""
    from diru_fast.providers import cpu
    ext = cpu.extension()
    for B, T, d in SHAPES:
        g = torch.Generator().manual_seed(0)
        r = lambda *s: torch.randn(*s, generator=g) * d ** -0.5  # noqa: E731
        xp, h0 = torch.randn(T, B, 3 * d, generator=g), torch.zeros(B, d)
        w_hh, w_int, w_out, b = r(3 * d, d), r(d, d), r(d, d), torch.zeros(d)
        fwd = lambda: ext.scan_fwd(xp, h0, w_hh, w_int, b, w_out, b, None, True)  # noqa: E731
        hs, saved = fwd()
        gh = torch.randn_like(hs)
        bwd = lambda: ext.scan_bwd(gh, h0, hs, saved, w_hh, w_int, w_out, None)  # noqa: E731
        for use_blas in (True, False):
            ext.set_use_blas(use_blas)
            tf = statistics.median(timed(fwd, 20) for _ in range(args.repeats))
            tb = statistics.median(timed(bwd, 20) for _ in range(args.repeats))
            flops = 2 * 5 * d * d * B * T
            print(f"kernel B={B} T={T} d={d} blas={use_blas}: fwd {tf * 1e3:.3f} ms ({tf / T * 1e6:.1f} us/step, "
                  f"{flops / tf / 1e9:.0f} GFLOP/s), bwd {tb * 1e3:.3f} ms ({flops / tb / 1e9:.0f} GFLOP/s)")
        ext.set_use_blas(True)


_MEMORY_CHILD = """
import resource, sys, torch, torch.nn.functional as F
sys.path.insert(0, '.')
from bench.profile_cpu import make
name, B, T, d = sys.argv[1], *map(int, sys.argv[2:5])
x, y = torch.randn(B, T, 1), torch.randn(B, 1)
m = make(name, d)
m(x)  # load kernels and libraries first
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(3):
    m.zero_grad(set_to_none=True); F.mse_loss(m(x), y).backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak)
"""


def report_memory(args):
    print("\npeak RSS of 3 train steps in a fresh process (KiB; 'step' = peak minus after warm-up)")
    for B, T, d in SHAPES:
        for name in ("lstm", "cpu", "torch"):
            out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, name, str(B), str(T), str(d)],
                                 capture_output=True, text=True, check=True).stdout.split()
            base, peak = int(out[0]), int(out[1])
            print(f"  B={B} T={T} d={d} {name:>6}: peak {peak} KiB, step +{peak - base} KiB")


def report_epoch(args):
    """One prototype-size epoch: 800 train samples in batches of 32 with Adam, then 200 validation."""
    g = torch.Generator().manual_seed(0)
    xtr, ytr = torch.randn(800, 50, 1, generator=g), torch.randn(800, 1, generator=g)
    xva, _ = torch.randn(200, 50, 1, generator=g), torch.randn(200, 1, generator=g)  # y: same draws as the study

    def epoch(model, opt):
        model.train()
        for i in range(0, 800, 32):
            opt.zero_grad(set_to_none=True)
            F.mse_loss(model(xtr[i:i + 32]), ytr[i:i + 32]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, 200, 32):
                model(xva[i:i + 32])

    times = {}
    models = {n: make(n, 64) for n in ("lstm", "cpu")}
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    for n in models:
        epoch(models[n], opts[n])  # warm-up epoch
    for _ in range(args.repeats):
        for n in models:
            t0 = CLOCK()
            epoch(models[n], opts[n])
            times.setdefault(n, []).append(CLOCK() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"\nprototype-size epoch (800 train / 200 val, B=32, T=50, d=64), median of {args.repeats}:")
    for n, t in med.items():
        print(f"  {n:>5}: {t * 1e3:.1f} ms  ({t / med['lstm']:.2f}x LSTM)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--kernel", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--epoch", action="store_true")
    parser.add_argument("--no-times", action="store_true", help="skip the step-time table")
    parser.add_argument("--json", help="also write the step-time rows here")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process CPU seconds instead of wall seconds: robust to other load "
                             "on a shared machine, meaningful with --threads 1 (with more threads it adds up "
                             "every thread's time, spinning included)")
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, backends {diru_fast.available_backends('cpu')}, "
          f"clock {'process CPU time' if args.cpu_time else 'wall'}, load average {os.getloadavg()[0]:.2f}")
    if not args.no_times:
        rows = report_times(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    if args.kernel:
        report_kernel(args)
    if args.profile:
        report_profile(args)
    if args.memory:
        report_memory(args)
    if args.epoch:
        report_epoch(args)


if __name__ == "__main__":
    main()

"""Benchmark suite settings: thread count from DIRU_BENCH_THREADS (default: torch's own)."""

import os

import torch


def pytest_configure(config):
    threads = os.environ.get("DIRU_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))

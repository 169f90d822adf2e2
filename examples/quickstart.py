"""Minimal DIRU example: fit a noisy sine-mixture regression, DIRU next to nn.LSTM.

    python examples/quickstart.py [--steps 150] [--threads 1]

Prints the backend DIRU runs on, parameter counts and the losses; seconds on a laptop CPU.
"""

import argparse
import time

import torch
import torch.nn.functional as F

import diru_fast
from diru_fast.baselines import LSTMModel


def make_data(n: int, steps: int, gen: torch.Generator):
    t = torch.linspace(0, 4 * torch.pi, steps + 10)
    f = torch.rand(n, 3, generator=gen) * torch.tensor([1.5, 2.0, 3.0]) + torch.tensor([0.5, 3.0, 7.0])
    s = (torch.sin(f[:, :1] * t) + 0.5 * torch.sin(f[:, 1:2] * t) + 0.25 * torch.sin(f[:, 2:] * t)
         + 0.1 * torch.randn(n, steps + 10, generator=gen))
    return s[:, :steps, None], s[:, steps:].mean(1, keepdim=True)  # x: [n, T, 1], y: [n, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x, y = make_data(512, 50, gen)
    xv, yv = make_data(128, 50, gen)
    print("backends available here:", diru_fast.available_backends())
    for name, model in (("DIRU", diru_fast.DIRU(1, 64, 1, num_compartments=4)),
                        ("LSTM", LSTMModel(1, 64, 1))):
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        start = time.perf_counter()
        for step in range(args.steps):
            i = (step * 32) % 512
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x[i:i + 32]), y[i:i + 32])
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = F.mse_loss(model(xv), yv).item()
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params:,} parameters, validation MSE {val:.4f}, "
              f"{1e3 * (time.perf_counter() - start) / args.steps:.1f} ms per training step")


if __name__ == "__main__":
    main()

"""Benchmark: structured empirical NTK (per-layer Grams) against the torch.func Jacobian contraction.

Cases (full kernel (N, N, O, O) and traced (N, N), symmetric x2 = x1, float32, 2 CPU threads):
1. MLP 64→1024→1024→10 on 64 probes: both methods run; prints their times, the speed-up
   (target ≥ 20×) and the relative difference ‖Θ_s − Θ_j‖_F / ‖Θ_j‖_F (target ≤ 1e-5).
2. The published MNIST-size RevMLP (d=784, H=8000, depth 2, 12.5 M parameters) on 500 probes × 10
   outputs, whose Jacobian would take N·O·P·4 bytes ≈ 250 GB: the structured path runs (target
   < 10 s); the Jacobian path runs on a few probes only, is checked against the structured kernel
   there, and its time on all probes is estimated from its measured cost per chunk pair
   (the contraction needs every pair of chunks: n_chunks·(n_chunks+1)/2 Jacobian pairs).
3. A small CNN on 8×8 digits (Conv2d 1→16→32, 3×3, padding 1, ReLU, Linear 2048→10) on 128 probes,
   the Recorder's default probe size: structured (convolutions by unfold, :mod:`dynamics.ntk.conv`)
   against the Jacobian path, both run in full.

Usage: python benchmarks/ntk.py [--quick] [--threads 2] [--repeats 3]
``--quick`` shrinks both cases (MLP 64→256→256→10 on 32 probes; RevMLP H=2000 on 100 probes).
Structured times are the best of ``--repeats`` (default 5) runs after one warm-up run, measured in the same process.
"""

from __future__ import annotations

import argparse
import time

import torch

from dynamics.models import MLP, RevMLP
from dynamics.ntk import empirical_ntk
from environment import environment_line, synchronize


def best_time(fn, repeats: int, device: str = "cpu") -> tuple[float, torch.Tensor]:
    result = fn()  # warm-up
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def mlp_case(hidden: int, n: int, repeats: int, device: str = "cpu") -> list[dict]:
    model = MLP(64, hidden, 2, 10, seed=0).to(device)
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for trace in (False, True):
        t_s, k_s = best_time(lambda: empirical_ntk(model, x, trace=trace, method="structured"), repeats, device)
        t_j, k_j = best_time(lambda: empirical_ntk(model, x, trace=trace, method="jacobian", chunk_size=n), 1, device)
        rows.append(dict(case=f"MLP 64→{hidden}→{hidden}→10, {n} probes", kernel="traced" if trace else "full",
                         structured=t_s, jacobian=f"{t_j:.2f}", ratio=f"{t_j / t_s:.0f}×",
                         rel_diff=f"{relative_difference(k_s, k_j):.1e}"))
    return rows


def revmlp_case(hidden: int, n: int, repeats: int, jac_probes: int = 4, jac_chunk: int = 2,
                device: str = "cpu") -> list[dict]:
    model = RevMLP(784, hidden, 2, 10, seed=0).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.randn(n, 784, generator=torch.Generator().manual_seed(0)).to(device)
    small = x[:jac_probes]
    pairs = lambda c: c * (c + 1) // 2  # noqa: E731  (chunk pairs of a symmetric kernel)
    scale = pairs(-(-n // jac_chunk)) / pairs(-(-jac_probes // jac_chunk))
    label = f"RevMLP d=784 H={hidden} depth 2 ({n_params / 1e6:.1f} M params), {n} probes"
    rows = []
    for trace in (False, True):
        start = time.perf_counter()
        k_small_j = empirical_ntk(model, small, trace=trace, method="jacobian", chunk_size=jac_chunk)
        synchronize(device)
        estimate = (time.perf_counter() - start) * scale
        k_small_s = empirical_ntk(model, small, trace=trace, method="structured")
        t_s, _ = best_time(lambda: empirical_ntk(model, x, trace=trace, method="structured"), repeats, device)
        rows.append(dict(case=label, kernel="traced" if trace else "full", structured=t_s,
                         jacobian=f"~{estimate:.0f} (est.)", ratio=f"~{estimate / t_s:.0f}×",
                         rel_diff=f"{relative_difference(k_small_s, k_small_j):.1e} ({jac_probes} probes)"))
    print(f"  [{label}: a dense Jacobian would need {n * 10 * n_params * 4 / 1e9:.0f} GB; the Jacobian path "
          f"ran on {jac_probes} probes (chunk {jac_chunk}) and its time is scaled by the {scale:.0f}× more "
          "chunk pairs of all probes]")
    return rows


def cnn_case(n: int, repeats: int, device: str = "cpu") -> list[dict]:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32 * 64, 10)).to(device)
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for trace in (False, True):
        t_s, k_s = best_time(lambda: empirical_ntk(model, x, trace=trace, method="structured"), repeats, device)
        t_j, k_j = best_time(lambda: empirical_ntk(model, x, trace=trace, method="jacobian"), 1, device)
        rows.append(dict(case=f"CNN 1→16→32 conv + Linear 2048→10, 8×8 inputs, {n} probes",
                         kernel="traced" if trace else "full", structured=t_s, jacobian=f"{t_j:.2f}",
                         ratio=f"{t_j / t_s:.1f}×", rel_diff=f"{relative_difference(k_s, k_j):.1e}"))
    return rows


def print_table(rows: list[dict]) -> None:
    header = "| case | kernel | structured (s) | jacobian (s) | speed-up | rel. diff |"
    print(header)
    print("|" + "---|" * 6)
    for r in rows:
        print(f"| {r['case']} | {r['kernel']} | {r['structured']:.3f} | {r['jacobian']} | {r['ratio']} | {r['rel_diff']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models and probe sets")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per structured measurement")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{environment_line(args.device)}, float32 (other work inflates the times)")
    d = args.device
    rows = mlp_case(256, 32, args.repeats, d) if args.quick else mlp_case(1024, 64, args.repeats, d)
    rows += revmlp_case(2000, 100, args.repeats, device=d) if args.quick else revmlp_case(8000, 500, args.repeats, device=d)
    rows += cnn_case(32 if args.quick else 128, args.repeats, d)
    print_table(rows)


if __name__ == "__main__":
    main()

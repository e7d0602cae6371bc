"""Benchmark: linear CKA in feature space vs the naive n×n centred-Gram computation.

    python benchmarks/cka.py            # N = 10 000 probes, D = 2 000 units (naive: ~4·N³ flops, minutes)
    python benchmarks/cka.py --quick    # N = 2 000, D = 400

Baselines, measured in the same run on the same data (float64):
- "naive n×n": K = XXᵀ, L = YYᵀ, Kc = H K H and Lc = H L H with the explicit centring matrix
  H = I − 11ᵀ/N, CKA = ⟨Kc, Lc⟩ / (‖Kc‖ ‖Lc‖) — the textbook formula (O(N³) time, several N×N arrays).
- "Gram, mean-centred": the same with Kc formed by subtracting row/column means (O(N²·D)), the usual
  kernel-space implementation; reported for context.
``analysis.cka.linear_cka`` forms only D×D matrices (O(N·D²)). Prints times, ratios and the largest
difference of the CKA values (must be ≤ 1e-6).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.cka import linear_cka
from environment import environment_line


def naive_centring_matrix_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.full((n, n), 1.0 / n)
    kc = h @ (x @ x.T) @ h
    lc = h @ (y @ y.T) @ h
    return float(np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc)))


def gram_mean_centred_cka(x: np.ndarray, y: np.ndarray) -> float:
    def centre(k):
        return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()
    kc, lc = centre(x @ x.T), centre(y @ y.T)
    return float(np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc)))


def timed(fn, *args, repeats: int = 1) -> tuple[float, float]:
    best, value = float("inf"), float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2000, D=400 instead of N=10000, D=2000")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--d", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for every method (default: the library's own setting)")
    args = parser.parse_args()
    print(environment_line())
    with threadpool_limits(limits=args.threads, user_api="blas"):
        run(args)


def run(args: argparse.Namespace) -> None:
    n = args.n or (2_000 if args.quick else 10_000)
    d = args.d or (400 if args.quick else 2_000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    y = np.tanh(x @ rng.standard_normal((d, d)) / np.sqrt(d)) + 0.5 * rng.standard_normal((n, d))
    t_fast, v_fast = timed(linear_cka, x, y, repeats=3)
    t_gram, v_gram = timed(gram_mean_centred_cka, x, y)
    t_naive, v_naive = timed(naive_centring_matrix_cka, x, y)
    diff = max(abs(v_fast - v_naive), abs(v_fast - v_gram))
    print(f"linear CKA, N={n}, D={d} (float64, BLAS threads: {args.threads or 'default'})")
    print(f"{'method':<34}{'time [s]':>10}{'ratio':>9}  value")
    print(f"{'naive n×n (explicit H)':<34}{t_naive:>10.3f}{t_naive / t_fast:>8.1f}x  {v_naive:.10f}")
    print(f"{'Gram, mean-centred (O(N²D))':<34}{t_gram:>10.3f}{t_gram / t_fast:>8.1f}x  {v_gram:.10f}")
    print(f"{'analysis.cka.linear_cka':<34}{t_fast:>10.3f}{1.0:>8.1f}x  {v_fast:.10f}")
    print(f"speed-up vs naive: {t_naive / t_fast:.1f}x (target >= 20x); max |difference| = {diff:.2e} (must be <= 1e-6)")
    if diff > 1e-6:
        raise SystemExit("CKA values disagree by more than 1e-6")


if __name__ == "__main__":
    main()

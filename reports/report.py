"""The experiment report: one self-contained HTML page (plus the figures as PNG files).

Order of the page: title; runs, configuration and software versions; the paper's six claims with
their verdicts (``reports.claims``, also written to ``findings.json`` beside the report); findings (a table of headline
numbers per optimiser and sentences computed from them, see ``reports.findings``); the figures with
captions (``reports.catalog``); a list of figures left out because their quantities were not recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from reports import html as h
from reports.catalog import FIGURES, FigureSpec
from reports.experiment import (ReportError, StoreInfo, as_dict, experiment_dir, is_run_store, load_analysis,
                                run_stores, store_info, store_infos)
from reports.claims import findings
from reports.training import training_sentence
from reports.verdicts import HAIR, HAIR_RULE
from reports.findings import BATCHES, Headline, finding_sentences, headlines
from reports.lazy_regime import lazy_findings, lazy_html
from reports.plotting import figure_png
from reports.ranking import incomparable
from reports.runs import (alignment_note, as_combined, divergence_notes, has_values, kernel_alignment,
                          optimizer_title, run_infos, step_series)

FINDINGS_HEADER = ["optimiser", "runs", "own-batch loss change per step", "next-batch loss change per step",
                   "held-out-batch loss change per step", "transfer to next batch", "transfer to held-out batch",
                   "final NTK alignment to init", "final CKA to init", "test accuracy", "train accuracy"]

FINDINGS_NOTE = (
    "Loss changes per step are mean log-ratios 100·mean(log(L_after/L_before)) over all steps, on the "
    "mini-batch the update was computed from (own), on the next training mini-batch (next) and on a fixed "
    "held-out batch; the log-ratio telescopes to the real change of a batch's loss, while the arithmetic "
    "mean of heavy-tailed per-step percentages does not (both, with the median, in the table below). "
    "Transfer is Σ log change (next or held-out) / Σ log change (own): 1 when a step helps every batch "
    "alike, 0 when it only fits its own batch. NTK alignment A(Θ_T, Θ_0) and linear CKA (mean over "
    "layers) compare the last checkpoint to initialisation; 1 = unchanged. Accuracies are at the last "
    "checkpoint. With several seeds: mean ± standard deviation.")

CHANGES_HEADER = ["optimiser", "batch", "mean log-ratio (%)", "arithmetic mean (%)", "median (%)"]
BATCH_TITLES = {"own": "own (trained on)", "next": "next training batch", "other": "held-out batch"}


def render_figures(ds: xr.Dataset, specs=FIGURES, dpi: int = 100):
    """([(spec, png bytes)], [(spec, why it was left out)]) for every figure of ``specs``."""
    drawn, skipped = [], []
    for spec in specs:
        try:
            fig = spec.draw(ds)
        except ValueError as why:  # the quantity was not recorded (e.g. no NTK, a single run)
            skipped.append((spec, str(why)))
            continue
        drawn.append((spec, figure_png(fig, dpi=dpi)))
    return drawn, skipped


def headline_row(x: Headline) -> list[str]:
    """Cells of one optimiser's row under FINDINGS_HEADER (mean ± sd over seeds; "—" when missing)."""
    m, s = x.mean, x.std
    return [x.title, str(len(x.runs)),
            *(h.number(m(f"{b}_log"), s(f"{b}_log"), digits=2, unit="%", signed=True) for b in BATCHES),
            h.number(m("next_transfer"), s("next_transfer")), h.number(m("transfer"), s("transfer")),
            h.number(m("ntk_alignment"), s("ntk_alignment")),
            h.number(m("cka_init"), s("cka_init")), h.number(m("test_acc"), s("test_acc"), digits=1, unit="%"),
            h.number(m("train_acc"), s("train_acc"), digits=1, unit="%")]


def changes_rows(hs: list[Headline]) -> tuple[list[list[str]], list[str]]:
    """Rows of the per-step change table (one per optimiser and batch that was recorded) and their colours."""
    rows, colors = [], []
    for x in hs:
        for b in BATCHES:
            if np.isfinite(x.mean(f"{b}_log")):
                rows.append([x.title, BATCH_TITLES[b]] + [h.number(x.mean(f"{b}_{k}"), x.std(f"{b}_{k}"), digits=3,
                                                                   signed=True) for k in ("log", "change", "median")])
                colors.append(h.optimizer_colors([x.optimizer])[0])
    return rows, colors


def _claim_values(entry: dict) -> str:
    parts = []
    for optimizer, v in entry["values"].items():
        if v["mean"] is None:
            continue
        sd = f" ± {v['sd']:.3g}" if v["sd"] is not None else ""
        parts.append(f"{optimizer_title(optimizer)} {v['mean']:.3g}{sd} (n={v['n_seeds']})")
    return "; ".join(parts) or "—"


def claim_verdict(entry: dict, differences=()) -> str:
    """A claim's verdict as shown: with the caveat of :mod:`reports.ranking` when it rests on one seed
    (the seed-to-seed spread is unknown), replaced when the runs differ in data or model; flagged when
    it rests on a hair or its criterion cannot discriminate (:mod:`reports.verdicts`)."""
    if differences and entry["verdict"] != "not measured":
        return "not compared (the runs differ in data or model)"
    text = entry["verdict"]
    if len(entry.get("per_seed", {})) == 1 and text in ("holds", "does not hold"):
        text = f"{text} on one seed (the seed-to-seed spread is unknown)"
    if entry.get("on_a_hair"):
        seeds = ", ".join(entry["on_a_hair"])
        text += f" — on a hair (seed{'s' if len(entry['on_a_hair']) > 1 else ''} {seeds} within ±{HAIR:.0%})"
    if entry.get("discriminates") is False and entry["verdict"] != "not measured":
        text += " — the criterion cannot discriminate"
    return text


def margins_text(entry: dict) -> str:
    """Per-seed margins as signed percentages with the binding bound, e.g. "seed 0 +4.1 %, seed 1 −0.8 %
    (binding: GN's ratio at 10 % < its ratio at the end)"; and why the criterion cannot discriminate."""
    margins = entry.get("margins") or {}
    shown = [f"seed {seed} {'+' if m['margin'] >= 0 else '−'}{abs(m['margin']) * 100:.1f} %"
             for seed, m in margins.items() if m["margin"] is not None]
    if not shown:
        return "—"
    binding = sorted({m["binding"] for m in margins.values()})
    text = ", ".join(shown) + f" (binding: {'; '.join(binding)})"
    if entry.get("why_not"):
        text += f". Cannot discriminate: {entry['why_not']}"
    return text


def claims_html(document: dict, differences=()) -> str:
    """The training footing sentence (:func:`reports.training.training_sentence`), then the table of the
    paper's claims (``reports.claims.findings``): claim, verdict, values, margins per seed, criterion;
    ``differences`` (:func:`reports.ranking.incomparable`) non-empty: no verdict is stated."""
    rows = [[f"{i}. {c['statement']}", claim_verdict(c, differences), f"{_claim_values(c)} — {c['unit']}",
             margins_text(c), c["criterion"]] for i, c in enumerate(document["claims"].values(), 1)]
    footing = training_sentence(document.get("training", {}))
    return ((f'<p class="note">{h.escape(footing)}</p>' if footing else "")
            + h.table(["claim (Buffelli et al. 2024)", "verdict", "measured (mean ± sd over seeds)",
                       "margin per seed (+: criterion met)", "criterion"], rows)
            + '<p class="note">Each claim is measured the way the paper measured it, per seed, and its criterion '
              'checked seed by seed: "holds" when every seed meets it, "does not hold" when none does, '
              '"inconclusive" when the seeds disagree. A seed\'s margin is the relative slack of the bound nearest '
              f'to deciding it, (rhs − lhs) / max(|lhs|, |rhs|); {h.escape(HAIR_RULE)}. A criterion cannot '
              'discriminate when the optimisers it compares lie within each other\'s seed-to-seed spread or all sit '
              'at a bound of the quantity\'s range. The same numbers are in findings.json.</p>')


def run_configs(ds: xr.Dataset, stores=()) -> dict[str, dict]:
    """label → config of every run: from the stores' root attributes, else the analysis' ``configs``."""
    configs = {s.label: s.config for s in stores if s.config}
    if not configs and "configs" in ds.attrs:
        configs = as_dict(ds.attrs["configs"], "configs")
    return configs


def findings_html(ds: xr.Dataset, configs: dict[str, dict] | None = None) -> str:
    """The findings table, its note, the per-step change statistics and one sentence per finding.

    ``configs`` (label → config, default :func:`run_configs`) decides whether the runs may be
    compared (:func:`reports.ranking.incomparable`)."""
    hs = headlines(ds)
    rows = [headline_row(x) for x in hs]
    differences = incomparable(run_configs(ds) if configs is None else configs)
    sentences = "".join(f"<li>{h.escape(s)}</li>" for s in finding_sentences(hs, differences, kernel_alignment(ds)))
    change_rows, change_colors = changes_rows(hs)
    changes = (h.table(CHANGES_HEADER, change_rows, numeric={2, 3, 4}, swatch=0, colors=change_colors)
               if change_rows else "")
    return (h.table(FINDINGS_HEADER, rows, numeric=set(range(1, len(FINDINGS_HEADER))), swatch=0,
                    colors=h.optimizer_colors([x.optimizer for x in hs]))
            + f'<p class="note">{h.escape(FINDINGS_NOTE)} {h.escape(alignment_note(ds))}</p>' + changes
            + (f'<ul class="findings">{sentences}</ul>' if sentences else ""))


def store_of(run, stores: list[StoreInfo], *, single: bool = False) -> StoreInfo | None:
    """The store a run of the analysis came from: the one store of a one-run report (``single``), else
    the store whose config names the run's optimiser and seed, else the store named like the run's
    label; None when none matches unambiguously."""
    if single:
        return stores[0]
    same = [s for s in stores if (s.config or {}).get("optimizer") == run.optimizer
            and (s.config or {}).get("seed") == run.seed]
    if len(same) == 1:
        return same[0]
    named = [s for s in stores if s.label == run.label]
    return named[0] if len(named) == 1 else None


def runs_html(ds: xr.Dataset, stores: list[StoreInfo]) -> str:
    """Table of runs (name, optimiser, seed, status, steps, checkpoints), configuration and versions."""
    ds = as_combined(ds)
    failed = [s for s in stores if s.status == "failed"]
    rows, colors = [], []
    for r in run_infos(ds):
        steps = step_series(ds, "loss", r.index)[0].size if has_values(ds, "loss") else 0
        checkpoints = int(np.isfinite(ds["test_acc"].isel(run=r.index).values).sum()) \
            if has_values(ds, "test_acc") else ds.sizes.get("checkpoint", 0)
        store = store_of(r, stores, single=len(stores) == 1 and ds.sizes["run"] == 1)
        state = store.status if store is not None else "—"
        rows.append([r.label, r.optimizer, "—" if r.seed is None else str(r.seed),
                     "FAILED" if state == "failed" else state, str(steps), str(checkpoints)])
        colors.append(r.color)
    parts = [h.table(["run", "optimiser", "seed", "store status", "steps logged", "checkpoints"], rows,
                     numeric={2, 4, 5}, swatch=0, colors=colors)]
    diverged = divergence_notes(ds)
    if diverged:   # non-finite inputs: NaN quantities from that step on (analysis.nonfinite)
        parts.insert(0, '<div class="failed-runs"><p><strong>Non-finite values.</strong></p><ul>'
                        + "".join(f"<li>{h.escape(note)}</li>" for note in diverged) + "</ul></div>")
    if failed:   # a failed run's curves end where it failed; say so next to the table
        items = "".join(f"<li><strong>{h.escape(s.label)}</strong>: {h.escape(s.error or 'failed')}</li>"
                        for s in failed)
        parts.insert(0, f'<div class="failed-runs"><p><strong>{len(failed)} run(s) failed</strong> and '
                        f'stopped early; their results cover the steps before the failure only.</p>'
                        f'<ul>{items}</ul></div>')
    configs = {s.label: s.config for s in stores if s.config}
    if not configs and "config" in ds.attrs:
        configs = {"all runs": as_dict(ds.attrs["config"], "config")}
    if configs:
        rows = h.merged_rows(configs)
        parts.append(f"<details><summary>Configuration ({len(rows)} settings; values that differ between "
                     f"runs are listed per run)</summary>{h.table(['setting', 'value'], rows)}</details>")
    versions = {s.label: s.versions for s in stores if s.versions}
    if versions:
        parts.append("<p><strong>Software versions:</strong> " + h.escape("; ".join(
            f"{k} {v}" for k, v in h.merged_rows(versions))) + "</p>")
    return "".join(parts)


def report_html(ds: xr.Dataset, *, title: str, stores: list[StoreInfo] = (), source: str = "",
                figures=None, claims: dict | None = None) -> str:
    """The whole page for a combined analysis Dataset; ``figures`` = ``render_figures(ds)`` and ``claims``
    = ``reports.claims.findings(ds)`` when given."""
    ds = as_combined(ds)
    drawn, skipped = figures if figures is not None else render_figures(ds)
    lead = f"Generated {h.timestamp()} by {h.generator()}"
    lead += f" from {source}." if source else "."
    body = [f"<h1>{h.escape(title)}</h1>", f'<p class="lead">{h.escape(lead)}</p>',
            "<h2>Runs and configuration</h2>", runs_html(ds, list(stores)),
            "<h2>Claims of the paper</h2>", claims_html(claims if claims is not None else findings(ds),
                                                        incomparable(run_configs(ds, stores))),
            "<h2>Findings</h2>", findings_html(ds, run_configs(ds, stores))]
    lazy = lazy_html(ds, (claims or {}).get("lazy_regime") or lazy_findings(ds), incomparable(run_configs(ds, stores)),
                     kernel_alignment(ds))
    body += (["<h2>Lazy regime</h2>", lazy] if lazy else []) + ["<h2>Figures</h2>"]
    body += [h.figure_html(png, number_=i, title=spec.title, caption=caption(spec, ds), anchor=spec.name)
             for i, (spec, png) in enumerate(drawn, 1)]
    if skipped:
        items = "".join(f"<li>{h.escape(spec.title)}: {h.escape(why)}</li>" for spec, why in skipped)
        body.append(f"<h2>Not shown</h2><ul class=\"note\">{items}</ul>")
    return h.page(title, "\n".join(body))


def caption(spec: FigureSpec, ds: xr.Dataset) -> str:
    """The figure's caption, derived from ``ds`` (:mod:`reports.catalog`)."""
    return spec.caption(ds)


def figures_dir_for(out: Path) -> Path:
    """Where the PNGs go: ``figures/`` beside ``report.html``, else ``<name>-figures/`` beside ``out``."""
    return out.parent / ("figures" if out.name == "report.html" else f"{out.stem}-figures")


def write_report(run_dir, out=None, *, centered_alignment: bool = False) -> Path:
    """Write the experiment's HTML report (default ``run_dir/report.html``) and its figures as PNG.

    ``run_dir`` is an experiment folder, or a single run store (default ``out``: ``NAME-report.html``
    beside ``NAME.zarr``). Reads ``run_dir/analysis.zarr`` when it was computed from the current run
    stores (:func:`reports.experiment.analysis_is_fresh`), else runs
    ``analysis.analyze_experiment(run_dir)``; a single store's analysis comes from
    ``analysis.open_runs``. ``centered_alignment``: the NTK alignments are centred (an analysis of
    the other kind is recomputed; the page says which it shows). Config and versions come from the
    stores' root attrs. The page and the
    figures are written atomically with the user's umask. Returns the report's path.
    Also writes the paper's claims (:func:`reports.claims.findings`) and the lazy-regime quantities
    (:func:`reports.lazy_regime.lazy_findings`, key ``lazy_regime``) as JSON: ``findings.json`` beside
    ``report.html``, else ``<report stem>.findings.json``.
    """
    path = experiment_dir(run_dir)
    single = is_run_store(path)
    if out is None:
        out = path.parent / f"{path.name.removesuffix('.zarr')}-report.html" if single else path / "report.html"
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"out {str(out)!r} is a folder; give the report's file name")
    if single:
        from analysis import open_runs  # the reports layer sits above analysis

        ds, stores = open_runs([path], centered_alignment=centered_alignment), [store_info(path)]
    else:
        ds = load_analysis(path, centered_alignment=centered_alignment)
        stores = store_infos(run_stores(path))
    drawn, skipped = render_figures(as_combined(ds))
    figures_dir = figures_dir_for(out)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for spec, png in drawn:
        h.write_bytes_atomic(figures_dir / f"{spec.name}.png", png)
    document = findings(as_combined(ds))
    document["lazy_regime"] = lazy_findings(as_combined(ds))
    text = report_html(ds, title=f"Training dynamics: {path.resolve().name}", stores=stores,
                       source=str(path), figures=(drawn, skipped), claims=document)
    h.write_text_atomic(out, text)
    name = "findings.json" if out.name == "report.html" else f"{out.stem}.findings.json"
    h.write_text_atomic(out.parent / name, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return out


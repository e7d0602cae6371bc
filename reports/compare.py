"""Comparison of several experiment folders in one self-contained HTML page.

For every experiment (a folder of run stores, see ``reports.experiment``): its headline numbers
(``reports.findings``) in one table, the configuration settings that differ between experiments,
the finding sentences (no sentence compares experiments trained on different data or models,
``reports.ranking``), and each figure of ``reports.catalog``: all experiments overlaid in one panel
where the axes agree, else side by side with a note saying why (``reports.overlay``).
"""

from __future__ import annotations

import os
from pathlib import Path

from analysis.labels import path_suffixes
from reports import html as h
from reports.catalog import FIGURES
from reports.experiment import ReportError, experiment_dir, load_analysis, run_stores, store_infos
from reports.findings import finding_sentences, headlines
from reports.overlay import axes_disagreement, overlay_dataset
from reports.plotting import figure_png
from reports.ranking import incomparable
from reports.report import FINDINGS_HEADER, FINDINGS_NOTE, headline_row, render_figures, run_configs
from reports.runs import alignment_note, as_combined, kernel_alignment


def experiment_names(paths: list[Path]) -> list[str]:
    """Short distinct names: the folder names, or more of each path where folder names repeat (the
    shortest distinguishing path suffix, :func:`analysis.labels.path_suffixes`); ReportError when two
    paths are the same folder."""
    try:
        return path_suffixes(paths)
    except ValueError as err:
        raise ReportError(f"experiment folders are not distinct: {err}") from None


def _check_dirs(dirs) -> list[Path]:
    if isinstance(dirs, (str, os.PathLike)):
        raise TypeError(f"dirs must be a list of folders, got the single path {str(dirs)!r}")
    paths = [experiment_dir(d) for d in dirs]
    if not paths:
        raise ReportError("compare needs at least one experiment folder, got none")
    if len(paths) < 2:
        raise ReportError(f"compare needs at least two experiment folders, got only {str(paths[0])!r}; for one "
                          f"experiment's report use `dynamics report {paths[0]}`")
    return paths


IDENTITY = ("optimizer", "optimizer.name", "seed", "train.seed")   # what tells the runs of one experiment apart


def _optimizer_of(config: dict) -> str:
    """The optimiser a run config names (``optimizer``, or ``optimizer.name`` in older stores)."""
    value = (config or {}).get("optimizer", "(absent)")
    return str(value.get("name", "(absent)") if isinstance(value, dict) else value)


def _per_optimizer(runs: dict[str, dict]) -> dict[str, dict[str, tuple[str, ...]]]:
    """setting → optimiser → the distinct values its runs have (run identity left out)."""
    out: dict[str, dict[str, set]] = {}
    for config in runs.values():
        flat = h.flatten(config)
        optimizer = _optimizer_of(config)
        for key, value in flat.items():
            if key not in IDENTITY:
                out.setdefault(key, {}).setdefault(optimizer, set()).add(value)
    return {key: {o: tuple(sorted(v)) for o, v in per.items()} for key, per in out.items()}


def _text(per: dict[str, tuple[str, ...]] | None) -> str:
    """One experiment's value of a setting: the value when all its optimisers share it, else per optimiser."""
    if not per:
        return "(absent)"
    distinct = set(per.values())
    if len(distinct) == 1:
        return " / ".join(distinct.pop())
    return "; ".join(f"{o}: {' / '.join(v)}" for o, v in per.items())


def _differing_settings(configs: dict[str, dict]) -> list[list[str]]:
    """[setting, value per experiment...] for the settings that really differ between the experiments.

    Settings are compared per optimiser, for the optimisers every experiment ran (all when none is
    common), so that per-optimiser options (GN's ``combine``, Adam's ``betas``) and run names are not
    counted as differences; the seeds are compared as one setting ``seeds``."""
    per_experiment = {name: _per_optimizer(runs) for name, runs in configs.items()}
    optimizers = [{_optimizer_of(c) for c in runs.values()} for runs in configs.values()]
    common = set.intersection(*optimizers) if optimizers else set()
    out = []
    for key in sorted({k for settings in per_experiment.values() for k in settings}):
        values = [settings.get(key) for settings in per_experiment.values()]
        restricted = [None if v is None else {o: x for o, x in v.items() if not common or o in common}
                      for v in values]
        if len({repr(sorted(v.items())) if v else None for v in restricted}) > 1:
            out.append([key, *(_text(v) for v in restricted)])
    seeds = [sorted({str(h.flatten(c).get("seed", h.flatten(c).get("train.seed", "(absent)"))) for c in runs.values()})
             for runs in configs.values()]
    if len({tuple(s) for s in seeds}) > 1:
        out.append(["seeds", *(", ".join(s) for s in seeds)])
    return out


def _shared(configs: dict[str, dict]) -> dict:
    """The ``data``/``model`` tables of an experiment's runs when they agree (else the first run's)."""
    first = next(iter(configs.values()), {})
    return {k: first.get(k) for k in ("data", "model") if k in first}


def across_sentence(differences: list[str]) -> str:
    """Why the comparison page states no comparison between the experiments."""
    return ("The experiments were trained on different data or models, so they are shown side by side and no "
            "sentence compares them across experiments. Differing settings: " + "; ".join(differences) + ".")


def figures_html(datasets: list, names: list[str], figures: list[dict]) -> list[str]:
    """Each figure of the catalogue: one panel set with every experiment overlaid where the axes agree
    (:mod:`reports.overlay`), else one per experiment side by side with a note saying why."""
    overlay = overlay_dataset(datasets, names) if len(datasets) > 1 else None
    parts = []
    for number_, spec in enumerate(FIGURES, 1):
        why = axes_disagreement(spec.name, datasets, names) if overlay is not None else "one experiment"
        if not why:
            try:
                png = figure_png(spec.draw(overlay))
            except ValueError:   # not recorded in any experiment
                png = None
            if png is not None:
                note = (f"All experiments in one panel (runs named \"experiment: run\"; the axes agree). "
                        f"{spec.caption(overlay)}")
                parts.append(h.figure_html(png, number_=number_, title=f"{spec.title} — all experiments",
                                           caption=note, anchor=spec.name))
                continue
            why = "it was not recorded"
        cells = []
        for name, drawn in zip(names, figures):
            if spec in drawn:
                cells.append(h.figure_html(drawn[spec], number_=number_, title=f"{spec.title} — {name}",
                                           caption="", anchor=f"{spec.name}-{len(cells)}"))
            else:
                cells.append(f'<p class="note">{h.escape(name)}: not recorded.</p>')
        grid = f'<div class="grid" style="grid-template-columns: repeat({len(names)}, 1fr)">{"".join(cells)}</div>'
        said = "" if overlay is None else f"Side by side, not overlaid: {why}. "
        described = next((c for c in (spec.caption(ds) for ds in datasets) if c), "")
        parts.append(f"<h3>{h.escape(spec.title)}</h3>{grid}<p class=\"note\">{h.escape(said + described)}</p>")
    return parts


def compare(dirs, out, *, centered_alignment: bool = False) -> Path:
    """Write a comparison page of the experiments in ``dirs`` to ``out`` (HTML); returns ``Path(out)``.
    ``out`` must end in ``.html`` or ``.htm`` (ReportError otherwise, before anything is read or written;
    an existing page of that name is replaced). ``centered_alignment``: the NTK alignments are centred (see :func:`reports.write_report`)."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a file path, got {out!r}")
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"out {str(out)!r} is a folder; give the comparison's file name")
    if out.suffix.lower() not in (".html", ".htm"):   # never overwrite a user's other file with a page
        raise ReportError(f"out {str(out)!r} does not end in .html; the comparison is an HTML page")
    paths = _check_dirs(dirs)
    names = experiment_names(paths)
    datasets = [as_combined(load_analysis(p, centered_alignment=centered_alignment)) for p in paths]
    stores = [store_infos(run_stores(p)) for p in paths]
    figures = [dict(render_figures(ds)[0]) for ds in datasets]

    title = "Comparison: " + " vs ".join(names)
    body = [f"<h1>{h.escape(title)}</h1>",
            f'<p class="lead">{h.escape(f"Generated {h.timestamp()} by {h.generator()}.")}</p>',
            "<h2>Experiments</h2>",
            h.table(["experiment", "folder", "runs"], [[n, str(p), ", ".join(str(r) for r in ds["run"].values)]
                                                      for n, p, ds in zip(names, paths, datasets)])]

    per_experiment = [headlines(ds) for ds in datasets]
    rows, optimizers = [], []
    for name, hs in zip(names, per_experiment):
        for x in hs:
            rows.append([name, *headline_row(x)])
            optimizers.append(x.optimizer)
    colors = h.optimizer_colors(optimizers)
    body += ["<h2>Findings</h2>", h.table(["experiment", *FINDINGS_HEADER], rows,
                                          numeric=set(range(2, len(FINDINGS_HEADER) + 1)),
                                          swatch=1, colors=colors),
             f'<p class="note">{h.escape(FINDINGS_NOTE)} {h.escape(alignment_note(datasets[0]))}</p>']
    configs = [run_configs(ds, st) for ds, st in zip(datasets, stores)]
    across = incomparable({name: _shared(c) for name, c in zip(names, configs)})
    if across:
        body.append(f'<p class="note">{h.escape(across_sentence(across))}</p>')
    for name, hs, c, ds in zip(names, per_experiment, configs, datasets):
        sentences = "".join(f"<li>{h.escape(s)}</li>" for s in finding_sentences(hs, incomparable(c),
                                                                                 kernel_alignment(ds)))
        body.append(f'<h3>{h.escape(name)}</h3><ul class="findings">{sentences}</ul>')

    settings = _differing_settings({n: {s.label: s.config for s in st if s.config} for n, st in zip(names, stores)})
    body.append("<h2>Settings that differ</h2>")
    if settings:
        open_ = " open" if len(settings) <= 12 else ""
        body.append(f"<details{open_}><summary>{len(settings)} settings differ between the experiments</summary>"
                    f"{h.table(['setting', *names], settings)}</details>")
    else:
        body.append('<p class="note">The experiments\' recorded configurations do not differ.</p>')

    body.append("<h2>Figures</h2>")
    body += figures_html(datasets, names, figures)
    h.write_text_atomic(out, h.page(title, "\n".join(body)))
    return out

"""The guide documents every metric name a trained run stores and the analysis reads (issue 15 §5):
the table "Metric names the analysis and the report read" of docs/guide/own-loop.md."""

import re
from pathlib import Path

import dynamics
from trainers import train
from trainers.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "guide" / "own-loop.md"


def documented_names() -> set[str]:
    """Names in backticks in the page's metric-name table (rows starting with | `log` or | `checkpoint`)."""
    rows = [line for line in PAGE.read_text(encoding="utf-8").splitlines()
            if line.startswith(("| `log`", "| `checkpoint`"))]
    assert rows, f"{PAGE.name} has no metric-name table"
    return {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[2])}


def test_every_stored_metric_is_documented(tmp_path):
    config = load_config("digits", overrides={"data.n_train": 160, "data.n_test": 60, "data.probe_size": 12,
                                              "model.hidden": 8, "train.steps": 2, "train.batch_size": 16,
                                              "train.checkpoints": 2, "train.ntk": False})
    tree = dynamics.open_run(train(config, "sgd", tmp_path / "sgd.zarr", progress=False))
    stored = set(tree["metrics"].to_dataset().data_vars)
    stored |= {name for name in tree["checkpoints"].to_dataset().data_vars
               if name != "ntk" and not name.startswith("rep_")}
    missing = stored - documented_names()
    assert not missing, f"metric names stored but not in the table of docs/guide/own-loop.md: {sorted(missing)}"


def test_every_metric_the_analysis_reads_is_documented():
    """Names the analysis reads from the metrics group (step_metrics' column() calls and its loss pairs)."""
    from analysis.run_analysis import LOSS_PAIRS

    source = (ROOT / "analysis" / "run_analysis.py").read_text(encoding="utf-8")
    body = source[source.index("def step_metrics"):source.index("def _coordinate")]
    read = set(re.findall(r'column\("([a-z_]+)"\)', body))
    for before, after in LOSS_PAIRS.values():
        read |= {before, after}
    assert {"loss", "next_loss", "other_loss_after", "phase"} <= read
    assert read <= documented_names()


def test_the_table_names_every_registered_metric():
    """Every metrics variable of the store's attribute registry is in the table (the registry is what
    the store writes as long_name/units; a name added there needs a line here)."""
    from dynamics.store import attributes

    registered = set(attributes.known_names("metrics")) - {"step", "epoch"}
    assert registered <= documented_names(), sorted(registered - documented_names())

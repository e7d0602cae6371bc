"""The README documents every metric name a trained run stores and the analysis reads (issue 15 §5)."""

import re
from pathlib import Path

import dynamics
from trainers import train
from trainers.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_names() -> set[str]:
    """Names in backticks in the README's metric-name table (rows starting with | `log` or | `checkpoint`)."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith(("| `log`", "| `checkpoint`"))]
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
    assert not missing, f"metric names stored but not in the README's table: {sorted(missing)}"


def test_every_metric_the_analysis_reads_is_documented():
    """Names the analysis reads from the metrics group (step_metrics' column() calls and pairs)."""
    source = (Path(__file__).resolve().parents[1] / "analysis" / "run_analysis.py").read_text(encoding="utf-8")
    body = source[source.index("def step_metrics"):source.index("def _coordinate")]
    read = set(re.findall(r'column\("([a-z_]+)"\)', body))
    for before, after in re.findall(r'\("([a-z_]+)", "([a-z_]+)"\)', body):
        read |= {before, after}
    assert {"loss", "next_loss", "other_loss_after", "phase"} <= read
    assert read <= documented_names()

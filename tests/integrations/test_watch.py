"""``dynamics report DIR --watch``: the report is written again as a run being trained commits data, from
committed data only, never writing into the store whose writer holds its lock; Ctrl-C stops with status 0."""

from __future__ import annotations

import hashlib
import os
from html.parser import HTMLParser

import pytest

import reports.watch
from dynamics.cli import main
from tiny_runs import tiny_training


def snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[path] = (os.stat(path).st_mtime_ns, hashlib.sha256(open(path, "rb").read()).hexdigest())
    return out


class RunsTable(HTMLParser):
    """The cells of the first table of a report (its runs table)."""

    def __init__(self):
        super().__init__()
        self.rows, self.tables, self.cell = [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        elif tag == "tr" and self.tables == 1:
            self.rows.append([])
        elif tag == "td" and self.tables == 1:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def steps_and_status(report) -> tuple[int, int, str]:
    table = RunsTable()
    table.feed(report.read_text())
    (row,) = [r for r in table.rows if r]
    return int(row[4]), int(row[5]), row[3]   # steps logged, checkpoints, store status


def test_watch_follows_a_training_run_and_never_writes_its_store(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "exp"
    folder.mkdir()
    store = folder / "sgd.zarr"
    training = tiny_training(store, steps=12, checkpoint_every=4, flush=True)
    seen, quiet = [], {}
    looks = iter(range(100))

    def pause(seconds):
        look = next(looks)
        if store.exists():   # the watcher wrote nothing into the store since training last left it
            assert snapshot(store) == quiet, "the watcher wrote into the store being trained"
        report = folder / "report.html"
        if report.exists():
            seen.append(steps_and_status(report))
        if look == 3:
            raise KeyboardInterrupt   # Ctrl-C
        for _ in range({0: 5, 1: 0, 2: 8}[look]):   # look 1 finds nothing new: no report is written
            next(training)
        quiet.clear()
        quiet.update(snapshot(store))

    monkeypatch.setattr(reports.watch, "pause", pause)
    assert main(["report", str(folder), "--watch", "5"]) == 0
    out, err = capsys.readouterr()
    assert "stopped watching" in err
    assert "not ready" in out.splitlines()[0]          # before the store existed
    wrote = [line for line in out.splitlines() if " wrote " in line]
    assert [s for s, _, _ in seen] == sorted(s for s, _, _ in seen)
    distinct = sorted(set(seen))
    assert distinct == [(4, 2, "running"), (12, 4, "running")] and len(seen) == 3
    assert len(wrote) == len(distinct)                 # written only when the committed data changed
    assert "sgd: 12 steps, 4 checkpoints (running)" in wrote[-1]
    training.close()
    assert not (store / "analysis").exists()


def test_watch_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["report", str(tmp_path), "--watch", "0"])
    assert stop.value.code == 2 and "--watch must be a number of seconds > 0" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--watch", "1"]) == 2


@pytest.mark.slow
def test_watch_a_child_process_training_then_ctrl_c(tmp_path):
    """A child process trains while ``dynamics report --watch`` (another process, with an audit hook
    logging every write aimed into the store) regenerates the report; Ctrl-C stops the watcher with
    status 0; the watcher never wrote into the store."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parents[1]), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    folder, stop, audit = tmp_path / "exp", tmp_path / "stop", tmp_path / "audit.log"
    folder.mkdir()
    store = folder / "sgd.zarr"
    trainer = subprocess.Popen([sys.executable, str(here / "watch_child.py"), "train", str(store), str(stop)], env=env)
    watcher = subprocess.Popen([sys.executable, str(here / "watch_child.py"), "watch", str(store), str(audit), "--",
                                "report", str(folder), "--watch", "0.5"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and len({s for s, _, _ in seen}) < 3:
            time.sleep(0.5)
            report = folder / "report.html"
            if report.exists():
                state = steps_and_status(report)
                if not seen or seen[-1] != state:
                    seen.append(state)
        assert trainer.poll() is None, "the run finished before the watcher saw it grow"
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=120)
    finally:
        stop.touch()
        trainer.wait(timeout=120)
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err[-3000:]
    assert "stopped watching" in err and "Traceback" not in err
    steps = [s for s, _, _ in seen]
    assert len(set(steps)) >= 3 and steps == sorted(steps) and all(status == "running" for _, _, status in seen)
    assert not audit.exists() or audit.read_text() == ""
    assert trainer.returncode == 0


def test_a_reader_meeting_a_live_lock_creates_no_file_in_the_store(tmp_path, monkeypatch):
    """What let a live view write into a store being trained: the analysis' attempt to take the lock
    (to cache its result) created a temporary lock file in the store before it saw the live holder."""
    import torch

    from dynamics import Recorder
    from dynamics.errors import StoreLockedError
    from dynamics.models import MLP
    from dynamics.store import lock as lock_module

    x, y = torch.randn(4, 3, dtype=torch.float64), torch.arange(4) % 2
    with Recorder(tmp_path / "live.zarr", MLP(3, 4, 1, 2, seed=0, dtype=torch.float64), probe=(x, y), layers=[]):
        created = []
        real_open = os.open

        def recording_open(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                created.append(str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(lock_module.os, "open", recording_open)
        with pytest.raises(StoreLockedError, match="is running"):
            lock_module.StoreLock(tmp_path / "live.zarr").acquire()
        monkeypatch.undo()
    assert created == []

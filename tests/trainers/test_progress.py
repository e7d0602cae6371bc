"""Progress reporting: lines off a terminal, a bar on one, nothing with --quiet (trainers.progress)."""

import io
import re
import subprocess
import sys

import pytest

from trainers.progress import Progress, clock

LINE = re.compile(r"^(?P<desc>.+): step (?P<step>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\), loss (?P<loss>\S+), "
                  r"(?P<rate>\S+) steps/s, ETA (?P<eta>\S+)$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("total, initial", [(100, 0), (37, 0), (50, 20), (5, 0)])
def test_lines_every_tenth_of_the_steps_and_at_the_end(total, initial):
    stream = io.StringIO()
    with Progress(total, initial=initial, desc="adam seed 0", stream=stream, interval=1e9) as progress:
        for step in range(initial + 1, total + 1):
            progress.update(step, 1.0 / step)
    steps = [int(LINE.match(line)["step"]) for line in lines(stream.getvalue())]
    # brute force: a line whenever floor(10 step / total) grows, plus the last step
    expected = [s for s in range(initial + 1, total + 1) if 10 * s // total > 10 * (s - 1) // total]
    if expected[-1] != total:
        expected.append(total)
    assert steps == expected
    last = LINE.match(lines(stream.getvalue())[-1])
    assert last["desc"] == "adam seed 0" and last["pct"] == "100" and last["eta"] == "0:00:00"
    assert float(last["loss"]) == pytest.approx(1.0 / total, rel=1e-3)


def test_lines_also_after_the_interval():
    stream = io.StringIO()
    progress = Progress(10**6, stream=stream, interval=1e-9)
    for step in (1, 2, 3):
        progress.update(step, 0.5)
    assert [int(LINE.match(line)["step"]) for line in lines(stream.getvalue())] == [1, 2, 3]
    progress.close()
    assert len(lines(stream.getvalue())) == 3  # no repeated final line


def test_interrupted_run_reports_where_it_stopped():
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with Progress(1000, stream=stream, interval=1e9) as progress:
            for step in range(1, 1000):
                progress.update(step, 0.1)
                if step == 57:
                    raise KeyboardInterrupt
    assert LINE.match(lines(stream.getvalue())[-1])["step"] == "57"


def test_bar_on_a_terminal_and_nothing_when_off():
    terminal = Terminal()
    with Progress(20, desc="gn seed 1", stream=terminal) as progress:
        for step in range(1, 21):
            progress.update(step, 0.25)
    text = terminal.getvalue()
    assert "gn seed 1" in text and "20/20" in text and "\r" in text and not LINE.search(text.split("\r")[-1])
    quiet = Terminal()
    with Progress(20, stream=quiet, mode="off") as progress:
        progress.update(20, 0.25)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("bad", [dict(mode="loud"), dict(interval=0), dict(interval=float("nan"))])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        Progress(10, stream=io.StringIO(), **bad)


@pytest.mark.parametrize("seconds, text", [(0, "0:00:00"), (59.6, "0:01:00"), (3725, "1:02:05"),
                                           (float("inf"), "?"), (float("nan"), "?")])
def test_clock(seconds, text):
    assert clock(seconds) == text


TINY = """preset = "digits"
[data]
n_train = 160
n_test = 60
probe_size = 16
[model]
hidden = 24
depth = 2
[train]
optimizers = ["adam"]
steps = 30
batch_size = 16
checkpoints = 3
"""


@pytest.mark.parametrize("quiet", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cli_prints_progress_lines_to_a_pipe(tmp_path, quiet):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    command = [sys.executable, "-m", "dynamics.cli", "train", "--optimizer", "adam", "--config", str(config),
               "--out", str(tmp_path / "adam.zarr"), "--seed", "2", "--threads", "1"] + (["--quiet"] if quiet else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    progress = [LINE.match(line) for line in lines(done.stderr) if LINE.match(line)]
    if quiet:
        assert done.stderr == ""
        return
    assert [int(m["step"]) for m in progress] == [3 * k for k in range(1, 11)]
    assert all(m["desc"] == "adam seed 2" and m["total"] == "30" for m in progress)
    assert "\r" not in done.stderr and lines(done.stderr)[0] == "adam seed 2: 30 steps on cpu, 1 CPU thread(s)"

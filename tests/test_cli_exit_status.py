"""One exit status per kind of failure (issue 22 §4): 1 when the file system fails (a full disk, a
read-only file system) with one line naming the path and the errno; 2 for a user error (a bad config
file, a damaged store); the config file is read as what it is (a pipe, /dev/null) or refused saying
what it is; user text in terminal lines shows control and bidi characters as escapes. Full disks
are a real tmpfs (tests/conftest.py ``mount_tmpfs``)."""

import os
from pathlib import Path

import pytest

from dynamics.cli import main
from dynamics.errors import StoreError, StoreIOError, exit_status
from dynamics.visible import visible
from full_disk import fill


def write_small_run(path: Path) -> Path:
    """A complete store of 3 checkpoints (NTK, one representation, one parameter), written directly."""
    import numpy as np

    from dynamics.store import RunWriter
    rng = np.random.default_rng(0)
    writer = RunWriter.create(path, config={"optimizer": "sgd", "seed": 0}, probe_x=rng.standard_normal((9, 4)),
                              probe_y=np.arange(9) % 3)
    writer.append_metrics(np.arange(1, 11), np.arange(10) / 10, {"loss": 1 + rng.random(10)})
    for k in range(3):
        factor = rng.standard_normal((9, 5))
        writer.append_checkpoint(5 * k, k / 2, {"train_loss": 1.0}, {
            "ntk": (("probe", "probe_"), factor @ factor.T), "rep_a": (("probe", "unit_a"), factor)},
            {"w": (("w_dim0",), rng.standard_normal(4))})
    writer.close("complete")
    return path


def one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_visible_escapes_controls_and_bidi_and_keeps_other_text():
    assert visible("a\x1b[31mb\u202ec\u2066d\ne\tf\x00\x7f\x9b") == "a\\x1b[31mb\\u202ec\\u2066d\\ne\\tf\\x00\\x7f\\x9b"
    kept = "naïve 日本 ملف \u200d👩‍🔬 ×"   # letters of any script, the emoji joiner
    assert visible(kept) == kept
    assert visible("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u2067\u2068\u2069\u2028\u2029") == (
        "\\u061c\\u200e\\u200f\\u202a\\u202b\\u202c\\u202d\\u2067\\u2068\\u2069\\u2028\\u2029")


def test_terminal_lines_show_user_text_escaped(tmp_path, capsys):
    name = tmp_path / "runs\x1b[2J\u202eevil"
    assert main(["analyze", str(name)]) == 2
    err = one_line(capsys)
    assert "\x1b" not in err and "\u202e" not in err and "runs\\x1b[2J\\u202eevil" in err


def test_exit_status_rule():
    assert exit_status(StoreIOError("x")) == 1 and exit_status(OSError(28, "full")) == 1
    assert exit_status(StoreError("damaged")) == 2
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as err:
            raise StoreError("writing failed") from err
    except StoreError as wrapped:
        assert exit_status(wrapped) == 1
    import gzip
    for cause in (FileNotFoundError(2, "No such file"), gzip.BadGzipFile("Not a gzipped file")):
        try:
            try:
                raise cause
            except OSError as err:
                raise StoreError("a data file the user named is missing or malformed") from err
        except StoreError as wrapped:
            assert exit_status(wrapped) == 2


@pytest.mark.parametrize("pages", [0, 1], ids=["full", "one-page-left"])
def test_full_disk_while_analysing_exits_1_naming_the_store(tmp_path, mount_tmpfs, capsys, pages):
    fs = mount_tmpfs("3m")
    store = write_small_run(fs / "exp" / "sgd.zarr")
    fill(fs, 4096 * pages)
    before = sorted(str(p.relative_to(fs)) for p in fs.rglob("*"))
    assert main(["analyze", str(store), "--quiet"]) == 1
    err = one_line(capsys)
    assert str(store) in err and "No space left on device (ENOSPC)" in err
    assert sorted(str(p.relative_to(fs)) for p in fs.rglob("*")) == before   # no lock, no staged folder left


def test_full_disk_in_a_sweep_folder_exits_1_naming_the_manifest(tmp_path, mount_tmpfs, capsys):
    fs = mount_tmpfs("1m")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('preset = "digits"\n[train]\nsteps = 2\n[sweep]\n"train.seed" = [0, 1, 2, 3, 4, 5, 6, 7]\n')
    fill(fs, 4096)
    assert main(["sweep", str(sweep), "--out", str(fs / "sw"), "--quiet"]) == 1
    err = one_line(capsys)
    assert f"cannot write the sweep manifest {fs / 'sw' / 'sweep.json'}" in err and "(ENOSPC)" in err
    assert sorted(p.name for p in (fs / "sw").iterdir()) == []   # no temporary file, no lock


def test_config_file_is_read_as_what_it_is(tmp_path, capsys):
    assert main(["config", "show", "--config", "/dev/null"]) == 0   # an empty config: the default preset
    assert 'preset = "mnist1d"' in capsys.readouterr().out
    assert main(["config", "show", "--config", str(tmp_path)]) == 2
    assert f"config file '{tmp_path}' is a directory; give the path of a TOML file" in one_line(capsys)
    assert main(["config", "show", "--config", "/dev/zero"]) == 2
    assert "is larger than 1048576 bytes" in one_line(capsys)
    assert main(["config", "show", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in one_line(capsys)
    assert main(["sweep", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"sweep file '{tmp_path}' is a directory" in one_line(capsys)


def test_config_from_a_pipe(capsys):
    """``--config <(...)``: the shell passes a pipe, /dev/fd/N, which is not a regular file."""
    read, write = os.pipe()
    try:
        os.write(write, b'preset = "digits"\n')
        os.close(write)
        assert main(["config", "show", "--config", f"/dev/fd/{read}"]) == 0
    finally:
        os.close(read)
    assert 'preset = "digits"' in capsys.readouterr().out


def test_notes_print_one_line_each_and_show_other_warnings_once(capsys):
    import warnings

    from dynamics.cli import notes
    from dynamics.errors import NotWrittenWarning, StaleAnalysisWarning
    with pytest.warns(RuntimeWarning, match="something else") as shown:   # where other warnings go on
        with notes("analyze") as not_written:
            warnings.warn("kept in memory", NotWrittenWarning)
            warnings.warn("left out", StaleAnalysisWarning)
            warnings.warn("something else", RuntimeWarning)
    err = capsys.readouterr().err
    assert not_written == ["kept in memory"] and [w.category for w in shown] == [RuntimeWarning]
    assert err == "dynamics analyze: note: kept in memory\ndynamics analyze: note: left out\n"

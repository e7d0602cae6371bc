"""dynamics.cluster: a local cluster's workers are forked from a forkserver that imported the preload
modules (no task pays for them), one task per worker at a time, single-threaded; bad options; the
guide's SLURM example (docs/guide/sweeps.md) builds a real dask-jobqueue SLURMCluster (skipped
without dask-jobqueue)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamics.cluster import check_cluster_options
from dynamics.errors import DynamicsError

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys
from dynamics.cluster import open_client

def before_any_task():
    import dask
    from dynamics.cluster import QUIET_MONITORS
    return {"modules": [m in sys.modules for m in ("torch", "trainers.loop", "json.tool")],
            "pid": os.getpid(), "ppid": os.getppid(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "hash": hash("sweep"), "monitors": {k: dask.config.get(k) for k in QUIET_MONITORS}}

def profile_thread(dask_worker):
    return dask_worker.profile_recent["count"]

def threads(_):
    import time
    from dynamics.cluster import single_threaded
    single_threaded()
    import torch
    end = time.perf_counter() + 0.3   # long enough for distributed's profiler to sample it, were it on
    while time.perf_counter() < end:
        pass
    return torch.get_num_threads()

if __name__ == "__main__":
    with open_client(workers=2, preload=["torch", "trainers.loop", "no_such_module_xyz"]) as client:
        client.wait_for_workers(2)
        info = client.run(before_any_task)
        settings = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
        ran = client.gather(client.map(threads, range(2), pure=False))
        print(json.dumps({"info": list(info.values()), "threads": ran, "saturation": settings,
                          "driver": os.getpid(), "samples": list(client.run(profile_thread).values())}))
"""


@pytest.mark.slow
def test_local_workers_are_forked_with_the_preloaded_modules(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    info = result["info"]
    assert len(info) == 2
    for worker in info:
        assert worker["modules"] == [True, True, False]   # preloaded before any task; nothing else
        assert worker["omp"] == "1"
        assert worker["ppid"] != result["driver"]           # forked by the forkserver, not the nanny
    assert info[0]["ppid"] == info[1]["ppid"]               # ... the same forkserver
    assert info[0]["hash"] == info[1]["hash"]               # one fixed string hash seed
    assert result["threads"] == [1, 1]
    assert result["saturation"] == 1.0
    # distributed's monitors leave the task thread alone: no profiler samples, slow ticks and monitors
    for worker in info:
        assert worker["monitors"] == {"distributed.worker.profile.enabled": False,
                                      "distributed.admin.tick.interval": "1s",
                                      "distributed.admin.system-monitor.interval": "2s",
                                      "distributed.worker.memory.monitor-interval": "1s"}
    assert result["samples"] == [0, 0]


@pytest.mark.parametrize(("workers", "scheduler", "piece"), [
    (0, None, "--workers"), (True, None, "--workers"), (2.0, None, "--workers"),
    (None, 8786, "--scheduler"), (2, "tcp://127.0.0.1:8786", "local cluster only")])
def test_bad_cluster_options_name_the_option(workers, scheduler, piece):
    with pytest.raises(DynamicsError, match=piece):
        check_cluster_options(workers, scheduler)


def slurm_example() -> str:
    """The SLURM block of docs/guide/sweeps.md: the ``slurm_cluster.py`` code fence."""
    text = (ROOT / "docs" / "guide" / "sweeps.md").read_text()
    start = text.index("# slurm_cluster.py")
    return text[start:text.index("```", start)]


def test_readme_slurm_example_builds_a_slurm_cluster(tmp_path, monkeypatch):
    """Runs the guide's SLURMCluster construction with the real dask-jobqueue (nothing is submitted:
    ``scale``, ``input`` and ``print`` statements are left out) and renders its job script."""
    pytest.importorskip("dask_jobqueue")
    module = ast.parse(slurm_example())
    kept = [s for s in module.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                    and ast.unparse(s.value.func) in ("cluster.scale", "input", "print"))]
    assert len(kept) == 2, ast.unparse(module)   # the import and the constructor
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(ast.Module(kept, type_ignores=[]), "docs/guide/sweeps.md", "exec"), namespace)
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
        assert "#SBATCH" in script and "OMP_NUM_THREADS=1" in script
        assert "--nthreads 1" in script or "--nworkers 8" in script
    finally:
        cluster.close()


def write_manifest_with(folder: Path, statuses: list[str]) -> None:
    from dynamics.sweep_manifest import SCHEMA, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    runs = {f"run{i}": {"status": status} for i, status in enumerate(statuses)}
    write_manifest(folder, {"schema": SCHEMA, "digest": "x", "config": {}, "sweep": {}, "optimizers": [],
                            "points": [], "runs": runs})


@pytest.mark.parametrize(("statuses", "finished"), [
    (["complete", "complete"], True), (["complete", "failed"], True), (["complete", "pending"], False),
    (["interrupted"], False), (["running", "complete"], False), ([], False)])
def test_sweep_looks_finished_reads_the_manifest(tmp_path, statuses, finished):
    from dynamics.cli import sweep_looks_finished

    write_manifest_with(tmp_path / "sweep", statuses)
    assert sweep_looks_finished(tmp_path / "sweep") is finished


def test_sweep_looks_finished_is_false_without_a_readable_manifest(tmp_path):
    from dynamics.cli import sweep_looks_finished

    assert not sweep_looks_finished(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    assert not sweep_looks_finished(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.json").write_text("{not json")
    assert not sweep_looks_finished(tmp_path / "bad")

"""Analysis layer: metrics on arrays and on run stores (lazy, multi-run); imports only ``dynamics``.

Array functions (numpy arrays or torch tensors in, floats out):
    kernels.alignment / kernel_distance / target_alignment, cka.linear_cka / rbf_cka / minibatch_cka,
    rank.effective_rank, probes.linear_probe_accuracy / linear_probe_r2, weights.relative_change / cosine_to_init,
    overfitting.relative_change_percent / transfer_ratio / moving_average.
Run functions (xarray out): analyze(run), open_runs(paths), analyze_experiment(run_dir),
open_sweep(sweep_dir) (a ``dynamics sweep`` folder, one dimension per swept key).
Rules shared by all of them: the task of the probe targets (:mod:`dynamics.task`), non-finite inputs
give NaN where used (:mod:`analysis.nonfinite`), features scaled by powers of two
(:mod:`analysis.scaling`), run labels unique by construction (:mod:`analysis.labels`).
"""

from analysis.cka import linear_cka, minibatch_cka, rbf_cka
from analysis.kernels import alignment, kernel_distance, target_alignment
from analysis.rank import effective_rank
from analysis.run_analysis import analyze
from analysis.runs import analyze_experiment, cka_between, open_runs
from analysis.sweep import open_sweep

__all__ = ["analyze", "open_runs", "analyze_experiment", "open_sweep", "cka_between", "linear_cka", "rbf_cka", "minibatch_cka",
           "alignment", "kernel_distance", "target_alignment", "effective_rank"]

"""One function per figure: ``f(analysis: xarray.Dataset) -> matplotlib.figure.Figure``.

Each takes the analysis Dataset of docs/DESIGN.md §6 (combined, with dim ``run``; a single run's
Dataset is accepted too), draws with a fixed Okabe–Ito colour per optimiser (``reports.palette``)
and raises ``ValueError`` naming the variable when what it plots was not recorded at all. Runs
whose values are all NaN (e.g. ``gn_residual`` of a first-order run) are left out of that figure.

Modules by purpose: :mod:`~reports.figures.common` (what every figure shares), ``seeds`` (the one
place seeds are aggregated), ``training`` (loss, accuracy, per-step batch loss change, GN residual),
``kernels`` (NTK), ``representations`` (CKA, probes), ``weights`` and ``lazy`` (linearised twin, NTK spectrum,
sharpness); each figure module also holds
its figures' captions, computed from the same data (``<figure>_caption(ds)``, :mod:`reports.catalog`).

Adding a figure (another module of this package): draw one line per optimiser with
:func:`reports.figures.common.plot_checkpoints` or :func:`reports.figures.seeds.draw_group` (seeds
aggregated over unequal runs, counts in the legend), choose value axes with
:func:`reports.plotting.set_value_scale` (never drops a finite value) and label them with
:func:`reports.plotting.scale_label`, mark optimiser switches with
:func:`reports.figures.common.mark_phases`, end with :func:`reports.plotting.legend` (one bounded legend
below the axes; explain line styles with :func:`reports.plotting.style_key`), raise ``ValueError`` naming
the variables when nothing was recorded, and add a ``FigureSpec`` with a caption function to
:data:`reports.catalog.FIGURES`; ``tests/reports/test_figure_layout.py`` then checks it at 1, 3, 9 and
30 runs.
"""

from reports.figures.kernels import effective_rank, ntk_dynamics
from reports.figures.lazy import linearized_twin, ntk_spectrum, sharpness
from reports.figures.representations import cka_between_optimizers, cka_to_init, probe_accuracy
from reports.figures.training import batch_loss_change, gn_residual, loss_accuracy
from reports.figures.weights import weight_change

__all__ = ["loss_accuracy", "batch_loss_change", "ntk_dynamics", "cka_to_init", "cka_between_optimizers",
           "effective_rank", "probe_accuracy", "gn_residual", "weight_change", "linearized_twin", "ntk_spectrum",
           "sharpness"]

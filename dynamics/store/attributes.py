"""What every stored variable means: one registry of CF attributes (``long_name``, ``units``,
``description``) for the run store's groups and for the analysis written beside them.

The writers take their attributes from here — :class:`dynamics.store.writer.RunWriter` for
``metrics``, ``checkpoints``, ``params`` and ``probe``, :func:`analysis.analyze` and
:func:`analysis.open_runs` for the analysis — so a plain ``xarray.open_zarr(store, group=...)``
shows them on every variable. Units follow UDUNITS/CF: "1" for dimensionless quantities and counts,
"s" for seconds, "%" for percentages. Names the registry does not know (a scalar a user logs under
a name of their own) get a generic entry that says so.

Clocks: the metrics variable ``time`` is the wall-clock duration of the optimiser's update in that
step (``time.perf_counter``, seconds; the forward/backward pass and the solve, without the
evaluations around it); the ``step`` coordinate counts optimiser updates (the row logged after
update k has step k); ``epoch`` is step / steps per epoch.
"""

from __future__ import annotations

from dynamics.store import names

Entry = tuple[str, str, str]   # (long_name, units, description)

_STEP = ("training step", "1", "number of optimiser updates done when the row was recorded (0 = initialisation)")
_EPOCH = ("epoch", "1", "training progress in epochs: step / steps per epoch (NaN where the caller gave none)")
_CHECKPOINT = ("checkpoint index", "1", "position of the checkpoint in the run: 0, 1, 2, ...")
_CHECKPOINT_STEP = ("training step of the checkpoint", "1",
                    "number of optimiser updates done when the checkpoint was taken (0 = initialisation)")
_CHECKPOINT_EPOCH = ("epoch of the checkpoint", "1", "training progress in epochs at the checkpoint")
# the coordinates of every group indexed by checkpoint
_CHECKPOINT_COORDS = {"checkpoint": _CHECKPOINT, "checkpoint_step": _CHECKPOINT_STEP,
                      "checkpoint_epoch": _CHECKPOINT_EPOCH}


def _change(batch: str, smooth: bool = False, log: bool = False) -> Entry:
    what = {"own": "the mini-batch the step trained on", "next": "the next training mini-batch",
            "other": "the fixed held-out batch (never trained on)"}[batch]
    if log:
        return (f"log change of the {batch} batch loss", "%",
                f"100 · log(L_after / L_before) of one step on {what}")
    text = f"100 · (L_after − L_before) / L_before of one step on {what}"
    if smooth:
        return (f"smoothed relative change of the {batch} batch loss", "%",
                f"trailing moving average (window in the analysis' settings) of {text}")
    return (f"relative change of the {batch} batch loss", "%", text)


def _distance(where: str) -> Entry:
    return (f"distance to the linearised twin on the {where}", "1",
            f"‖f_t(X) − f_lin,t(X)‖ / ‖f_t(X) − f_0(X)‖ over the {where} inputs and all outputs: how far the network "
            "has left its first-order Taylor model f_lin(x; θ) = f(x; θ_0) + J(x; θ_0)(θ − θ_0), trained on the same "
            "batches by the same optimiser, relative to how far its outputs moved (0 = lazy; NaN at initialisation)")


def _linear(split: str, what: str) -> Entry:
    unit = "fraction of the" if what == "accuracy" else "mean loss over the"
    return (f"linearised twin's {split} {what}", "1", f"{unit} {split} evaluation set of the linearised twin f_lin")


# checkpoint scalars of train.linearized and train.sharpness (trainers.lazy; docs/guide/lazy-regime.md)
_LAZY: dict[str, Entry] = {
    "linearized_distance_probe": _distance("probe set"),
    "linearized_distance_test": _distance("test evaluation set"),
    "linearized_train_loss": _linear("training", "loss"), "linearized_train_acc": _linear("training", "accuracy"),
    "linearized_test_loss": _linear("test", "loss"), "linearized_test_acc": _linear("test", "accuracy"),
    "sharpness": ("sharpness", "1", "largest eigenvalue of the Hessian of the probe-set loss w.r.t. the trained "
                                    "parameters (Lanczos on Hessian-vector products, model in eval mode)"),
    "ggn_sharpness": ("GGN sharpness", "1", "largest eigenvalue of the generalised Gauss–Newton matrix JᵀHJ/N of the "
                                            "probe-set loss (Lanczos)"),
    "preconditioned_sharpness": ("preconditioned sharpness", "1",
                                 "largest eigenvalue of P^(-1/2) H P^(-1/2), P = (1 − β1^t)·diag(√v̂_t + ε) Adam's "
                                 "preconditioner (Cohen et al. 2022); NaN for other optimisers and before Adam's first step"),
    "sharpness_threshold": ("stability threshold", "1",
                            "the sharpness above which the optimiser's step is unstable on a quadratic: 2(1 + μ)/η for "
                            "SGD (2/η without momentum), (2 + 2β1)/((1 − β1)η) for Adam's preconditioned sharpness; "
                            "NaN for Gauss–Newton, other optimisers and Adam before its first step"),
}

_GROUPS: dict[str, dict[str, Entry]] = {
    "metrics": {
        "step": _STEP, "epoch": _EPOCH,
        "loss": ("training batch loss before the step", "1",
                 "loss (cross-entropy in nats or squared error) of the mini-batch, before the update"),
        "loss_after": ("training batch loss after the step", "1", "loss of the same mini-batch after the update"),
        "other_loss": ("held-out batch loss before the step", "1",
                       "loss of the fixed held-out training batch (never trained on) before the update"),
        "other_loss_after": ("held-out batch loss after the step", "1",
                             "loss of the fixed held-out training batch after the update"),
        "next_loss": ("next batch loss before the step", "1",
                      "loss of the next training mini-batch (the one the following step trains on) before the update"),
        "next_loss_after": ("next batch loss after the step", "1", "loss of the next training mini-batch after the update"),
        "lr": ("learning rate", "1", "step size of the update (the optimiser's first parameter group)"),
        "grad_norm": ("gradient norm", "1", "Euclidean norm of the loss gradient over all trained parameters"),
        "update_norm": ("update norm", "1", "Euclidean norm of the parameter change of the step, ‖θ_{k+1} − θ_k‖"),
        "gn_residual": ("Gauss–Newton residual", "1",
                        "relative residual ρ = ‖J·Δθ − ε‖ / ‖ε‖ of the Gauss–Newton solve (NaN for first-order runs)"),
        "time": ("step duration", "s",
                 "wall-clock seconds of the optimiser's update (time.perf_counter around the forward/backward "
                 "pass and the step or the Gauss–Newton solve; evaluations excluded)"),
        "phase": ("optimiser phase", "1", "index of the optimiser phase ([[train.phases]]) the step belongs to"),
    },
    "checkpoints": {
        **_CHECKPOINT_COORDS,
        "step": _CHECKPOINT_STEP, "epoch": _CHECKPOINT_EPOCH,   # the names in stores written before
        "train_loss": ("training loss", "1", "mean loss over the training evaluation set at the checkpoint"),
        "train_acc": ("training accuracy", "1", "fraction of the training evaluation set classified correctly"),
        "test_loss": ("test loss", "1", "mean loss over the test evaluation set at the checkpoint"),
        "test_acc": ("test accuracy", "1", "fraction of the test evaluation set classified correctly"),
        "ntk": ("empirical neural tangent kernel", "1",
                "Θ(x_i, x_j) = Σ_o ⟨∂f_o(x_i)/∂θ, ∂f_o(x_j)/∂θ⟩ on the probe inputs, traced over the outputs"),
        **_LAZY,
    },
    "params": {**_CHECKPOINT_COORDS, "step": _CHECKPOINT_STEP, "epoch": _CHECKPOINT_EPOCH},
    "probe": {
        "x": ("probe inputs", "1", "the fixed probe set's inputs (standardised as in training) that NTKs and "
                                   "representations are computed on"),
        "y": ("probe targets", "1", "the probe set's class labels (or regression targets)"),
        "probe_index": ("index of the probe sample in the data set", "1",
                        "position of each probe sample in the training split of the data set as loaded "
                        "(after the train/test split of data.split_seed); -1 where the caller gave none"),
    },
    "analysis": {
        **_CHECKPOINT_COORDS,
        "step": _STEP, "epoch": _EPOCH,
        "layer": ("layer", "1", "recorded layer (module name with '.' → '__')"),
        "param": ("parameter", "1", "trained parameter (name with '.' → '__')"),
        "ntk_alignment_init": ("NTK alignment to initialisation", "1",
                               "A(Θ_t, Θ_0) = ⟨Θ_t, Θ_0⟩_F / (‖Θ_t‖_F ‖Θ_0‖_F) on the probe set"),
        "ntk_velocity": ("NTK velocity", "1", "1 − A(Θ_t, Θ_{t−1}) between consecutive checkpoints (NaN at the first)"),
        "ntk_target_alignment": ("NTK–target alignment", "1",
                                 "A(Θ_t, YYᵀ): Y the one-hot probe labels (task classification) or the probe's "
                                 "regression targets (task regression); the variable's attr task says which"),
        "ntk_effective_rank": ("NTK effective rank", "1", "exp of the entropy of Θ_t's normalised eigenvalues"),
        "ntk_mode": ("NTK eigen-direction", "1", "rank i of the NTK eigenvalue λ_i (1 = largest)"),
        "ntk_eigenvalues": ("NTK eigenvalues", "1", "eigenvalues λ_1 ≥ λ_2 ≥ … of the probe-set NTK Θ_t (of HΘ_tH "
                                                    "when the analysis centres kernel alignments)"),
        "ntk_label_alignment": ("cumulative NTK label alignment", "1",
                                "Σ_{i≤k} Σ_c (u_iᵀ y_c)² / ‖Y‖²_F: fraction of the one-hot probe labels' energy in "
                                "the NTK's top-k eigenvectors u_i (of HΘ_tH and HY when centred)"),
        "ntk_condition_number": ("NTK condition number", "1",
                                 "λ_max / λ_min of the probe-set NTK Θ_t (inf when numerically singular: "
                                 "λ_min ≤ N·eps·λ_max)"),
        "cka_init": ("CKA to initialisation", "1", "linear CKA of the layer's probe representation with the first checkpoint's"),
        "rep_effective_rank": ("representation effective rank", "1",
                               "entropy effective rank of the centred probe representation"),
        "probe_accuracy": ("linear-probe accuracy", "1",
                           "cross-validated logistic-regression accuracy on the layer's probe representation "
                           "(task classification; NaN where no probe was fitted, and for regression runs)"),
        "probe_r2": ("linear-probe R²", "1",
                     "cross-validated R² of a ridge-regression probe on the layer's probe representation "
                     "(task regression; NaN where no probe was fitted, and for classification runs)"),
        "first_nonfinite_step": ("first non-finite input", "1",
                                 "training step of the first NaN/inf input of the analysis (metric, checkpoint "
                                 "scalar, NTK, representation or parameter; NaN when every input is finite); "
                                 "attr nonfinite of the analysis says which inputs and where"),
        "weight_rel_change": ("relative weight change", "1",
                              "‖θ_t − θ_0‖ / ‖θ_0‖ (Frobenius); NaN where the checkpoint stores no parameters "
                              "(params = first_last between the ends)"),
        "weight_cosine_init": ("cosine to initial weights", "1", "⟨θ_t, θ_0⟩ / (‖θ_t‖ ‖θ_0‖)"),
        "weight_delta_norm": ("weight change norm", "1", "‖θ_t − θ_0‖ (Frobenius)"),
        "weight_init_norm": ("initial weight norm", "1", "‖θ_0‖ (Frobenius) at the first checkpoint"),
        "param_ndim": ("parameter rank", "1", "number of dimensions of the parameter tensor"),
        "loss": ("training batch loss before the step", "1", "copied from the metrics group"),
        "gn_residual": ("Gauss–Newton residual", "1", "copied from the metrics group (NaN for first-order runs)"),
        "own_change": _change("own"), "own_log_change": _change("own", log=True),
        "own_change_smooth": _change("own", smooth=True),
        "next_change": _change("next"), "next_log_change": _change("next", log=True),
        "next_change_smooth": _change("next", smooth=True),
        "other_change": _change("other"), "other_log_change": _change("other", log=True),
        "other_change_smooth": _change("other", smooth=True),
        "transfer": ("transfer ratio", "1", "other_change / own_change of the step (NaN where own_change ≈ 0)"),
        "transfer_smooth": ("smoothed transfer ratio", "1", "other_change_smooth / own_change_smooth"),
        "phase": ("optimiser phase", "1", "copied from the metrics group"),
        "cka_between": ("CKA between runs", "1",
                        "linear CKA of the representations of run and run_ at the same checkpoint index and layer"),
        "run": ("run", "1", "run label: the optimiser, with the seed and the shortest distinguishing store path "
                            "suffix where needed to be unique (analysis.labels)"),
        "run_": ("run (second axis)", "1", "run label, second axis of cka_between"),
        "optimizer": ("optimiser", "1", "name of the run's optimiser"),
        "seed": ("seed", "1", "seed of the run's model initialisation and data order"),
        "label": ("run label", "1", "same as run"),
        "task": ("task", "1", "classification or regression: what the run's probe targets are (dynamics.task)"),
    },
}
_GROUPS["analysis"].update({k: v for k, v in _GROUPS["checkpoints"].items() if k.endswith(("_loss", "_acc"))})
_GROUPS["analysis"].update({k: (v[0], v[1], f"{v[2]}; copied from the checkpoints group") for k, v in _LAZY.items()})


def _pattern(group: str, name: str, original: str | None) -> Entry | None:
    if group == "checkpoints" and name.startswith("rep_"):
        layer = original or names.original(name.removeprefix("rep_"))
        return (f"representation of {layer}", "1",
                f"output of layer {layer!r} on the probe inputs, flattened per sample (variable name: "
                f"'rep_' + the layer's store key, dynamics.store.names)")
    if group == "params":
        param = original or names.original(name)
        return (f"parameter {param}", "1", f"value of the trained parameter {param!r} at the checkpoint (variable "
                                           f"name: its store key, dynamics.store.names); NaN at checkpoints "
                                           f"that store none (params = first_last)")
    return None


def entry(group: str, name: str, original: str | None = None) -> Entry:
    """(long_name, units, description) of variable ``name`` of ``group``: the registry's entry, a
    pattern's (``rep_<layer>``, parameters), or a generic one for names it does not know.
    ``original``: the name the user gave the variable, where its key differs
    (:mod:`dynamics.store.names`)."""
    known = _GROUPS.get(group, {}).get(name) or _pattern(group, name, original)
    if known is not None:
        return known
    shown = original or name
    if group == "metrics":
        return (shown, "1", f"scalar {shown!r} logged by the training loop per step (not one of dynamics' own names)")
    return (shown, "1", f"scalar {shown!r} recorded by the caller (not one of dynamics' own names)")


def cf_attrs(group: str, name: str, original: str | None = None) -> dict[str, str]:
    """``{"long_name", "units", "description"}`` of variable ``name`` of ``group`` (see :func:`entry`)."""
    long_name, units, description = entry(group, name, original)
    return {"long_name": long_name, "units": units, "description": description}


def known_names(group: str) -> list[str]:
    """The names the registry holds explicitly for ``group``."""
    return list(_GROUPS.get(group, {}))

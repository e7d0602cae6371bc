"""``[optimizers.<name>]`` tables: one pydantic model per optimiser kind.

The kind is the table's ``kind`` key, else the table's name, matched case-insensitively:
``gn`` (:class:`GNOptions`, exact Gauss–Newton for RevMLPs), ``kgn`` (:class:`KGNOptions`,
Moore–Penrose GN for any model), ``sgd`` / ``adam`` (:class:`SGDOptions` / :class:`AdamOptions`),
or any other ``torch.optim`` class by name (``AdamW``, ``RMSprop``, ...), whose model is built from
the class signature (keyword defaults give types; tuples keep their length). Optimisers the training
loop cannot drive are refused with the reason (:data:`REFUSED`), and so are torch's implementation
switches (:data:`UNSUPPORTED_KEYS`). Every other table key is a keyword argument of the class;
``train.loss`` is passed to GN solvers separately.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictStr, ValidationError, create_model

from dynamics.errors import ConfigError
from dynamics.gauss_newton.kernel import BATCHNORM
from dynamics.gauss_newton.solve import TRUNCATIONS
from dynamics.ntk.api import METHODS
from trainers.config_errors import config_error

GN_KINDS = {"gn": "ReversibleGN", "kgn": "KernelGN"}
TORCH_KINDS = {"sgd": "SGD", "adam": "Adam"}
RESERVED = {"self", "params", "model", "loss"}
REFUSED = {"LBFGS": "needs a closure that re-evaluates the loss, which the training loop does not provide",
           "SparseAdam": "needs sparse gradients; the models here have dense gradients",
           "Optimizer": "is the abstract base class"}
UNSUPPORTED_KEYS = {
    "differentiable": "differentiating through optimiser steps is not supported by the training loop",
    "foreach": "an implementation switch torch chooses itself", "fused": "an implementation switch torch "
    "chooses itself", "capturable": "CUDA-graph capture is not used by the training loop",
    "output": "selects among the outputs of a model's forward; the trainer's models return one logits tensor"}
RTOL = ("relative truncation: keep Gram eigenvalues λ = s² > max(atol, rtol·λ_max) (None = the "
        "truncation rule's value)")
ATOL = "absolute truncation of Gram eigenvalues λ = s² (None = the truncation rule's value)"
TRUNCATION = "truncation rule: 'exact' (rtol = N·eps, atol = 0) or 'paper' (rtol = 1e-4, atol = 1e-10)"
KIND = "gn, kgn, sgd, adam or a torch.optim class name, any case (default: the table's name)"
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class OptimizerOptions(BaseModel):
    """Base of every optimiser table: ``kind`` plus the class's keyword arguments."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    kind: str = Field(description=KIND)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the optimiser class (everything but ``kind``; None values dropped)."""
        return {k: v for k, v in self.model_dump().items() if k != "kind" and v is not None}


class GNOptions(OptimizerOptions):
    """``kind = "gn"``: :class:`dynamics.gauss_newton.ReversibleGN` (RevMLP only)."""

    kind: Literal["gn"] = Field("gn", description=KIND)
    lr: float = Field(0.1, gt=0, description="step size α of θ ← θ + α δθ")
    combine: Literal["exact", "sum"] = Field("exact", description="how the two half-block updates combine")
    rtol: float | None = Field(None, ge=0, description=RTOL)
    atol: float | None = Field(None, ge=0, description=ATOL)
    truncation: Literal[TRUNCATIONS] = Field("exact", description=TRUNCATION)
    ce_target: Literal["identity", "exact"] = Field("identity", description="GN target for cross-entropy")
    solver: Literal["gram", "svd"] = Field("gram", description="least-squares solver of each block")


class KGNOptions(OptimizerOptions):
    """``kind = "kgn"``: :class:`dynamics.gauss_newton.KernelGN` (any model)."""

    kind: Literal["kgn"] = Field("kgn", description=KIND)
    lr: float = Field(0.1, gt=0, description="step size α of θ ← θ + α δθ")
    damping: float = Field(0.0, ge=0, description="λ of (K + λI)⁻¹ (0 = Moore–Penrose pseudo-inverse)")
    chunk_size: int | None = Field(None, ge=1, description="Jacobian rows per chunk (None = all at once)")
    ce_target: Literal["identity", "exact"] = Field("identity", description="GN target for cross-entropy")
    rtol: float | None = Field(None, ge=0, description=RTOL)
    atol: float | None = Field(None, ge=0, description=ATOL)
    truncation: Literal[TRUNCATIONS] = Field("exact", description=TRUNCATION)
    method: Literal[METHODS] = Field("auto", description="how the kernel is formed (dynamics.ntk methods)")
    batchnorm: Literal[BATCHNORM] = Field("update", description="'update': batch-norm running statistics "
                                          "follow each step; 'freeze': they are left as they are")


class SGDOptions(OptimizerOptions):
    """``kind = "sgd"``: ``torch.optim.SGD``."""

    kind: Literal["sgd"] = Field("sgd", description=KIND)
    lr: float = Field(1e-3, gt=0, description="learning rate")
    momentum: float = Field(0.0, ge=0, description="momentum factor")
    dampening: float = Field(0.0, ge=0, le=1, description="dampening of the momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0, dampening = 0)")
    maximize: bool = Field(False, description="maximise instead of minimise")


class AdamOptions(OptimizerOptions):
    """``kind = "adam"``: ``torch.optim.Adam``."""

    kind: Literal["adam"] = Field("adam", description=KIND)
    lr: float = Field(1e-3, gt=0, description="learning rate")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), strict=False,
                                     description="decay rates (β₁, β₂) of the moment estimates, each in [0, 1)")
    eps: float = Field(1e-8, ge=0, description="added to the denominator")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty")
    amsgrad: bool = Field(False, description="AMSGrad variant")
    maximize: bool = Field(False, description="maximise instead of minimise")
    decoupled_weight_decay: bool = Field(False, description="AdamW-style decoupled weight decay")


KIND_MODELS: dict[str, type[OptimizerOptions]] = {"gn": GNOptions, "kgn": KGNOptions, "sgd": SGDOptions,
                                                  "adam": AdamOptions}


def torch_classes() -> dict[str, type]:
    """Lower-case name → every ``torch.optim.Optimizer`` subclass exported by ``torch.optim``."""
    return {name.lower(): cls for name in dir(torch.optim)
            if inspect.isclass(cls := getattr(torch.optim, name)) and issubclass(cls, torch.optim.Optimizer)}


def resolve_kind(key: str, kind: object) -> str:
    """The canonical kind of ``kind`` (case-insensitive): gn, kgn, sgd, adam or a torch.optim class name."""
    if not isinstance(kind, str):
        raise ConfigError(f"config key {key}.kind must be a str, got {kind!r} ({type(kind).__name__})")
    lower = kind.lower()
    if lower in KIND_MODELS:
        return lower
    cls = torch_classes().get(lower)
    if cls is None:
        raise ConfigError(f"config key {key}: unknown optimizer {kind!r}; choose gn, kgn, sgd, adam or a "
                          f"torch.optim class name (AdamW, RMSprop, ...)")
    if cls.__name__ in REFUSED:
        raise ConfigError(f"config key {key}: optimizer {cls.__name__} cannot be used: it "
                          f"{REFUSED[cls.__name__]}")
    return cls.__name__


def optimizer_class(kind: str) -> type:
    """The class implementing the canonical ``kind``."""
    if kind in GN_KINDS:
        from dynamics import gauss_newton
        return getattr(gauss_newton, GN_KINDS[kind])
    return getattr(torch.optim, TORCH_KINDS.get(kind, kind))


def field_for(name: str, default: object, owner: str) -> tuple[Any, Any]:
    """(type, Field) of a torch.optim keyword argument, from its default."""
    described = f"keyword argument {name} of torch.optim.{owner}"
    if isinstance(default, torch.Tensor):
        default = default.item()
    if isinstance(default, bool):
        return StrictBool, Field(default, description=described)
    if isinstance(default, (int, float)):
        return StrictFloat, Field(float(default), gt=0 if name == "lr" else None, description=described)
    if isinstance(default, str):
        return StrictStr, Field(default, description=described)
    if isinstance(default, tuple):
        items = tuple(StrictFloat | None if v is None else StrictFloat for v in default)
        return tuple[items], Field(default, strict=False, description=f"{described} ({len(default)} numbers)")
    if default is inspect.Parameter.empty:
        return StrictFloat | StrictBool | StrictStr, Field(description=f"{described} (required)")
    return StrictBool | StrictFloat | StrictStr | None, Field(default, description=described)


@functools.cache
def torch_options_model(kind: str) -> type[OptimizerOptions]:
    """A model of the keyword arguments of ``torch.optim.<kind>``, built from its signature."""
    cls = getattr(torch.optim, kind)
    fields = {p.name: field_for(p.name, p.default, kind) for p in inspect.signature(cls.__init__).parameters.values()
              if p.name not in RESERVED and p.name not in UNSUPPORTED_KEYS
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return create_model(f"{kind}Options", __base__=OptimizerOptions, kind=(Literal[kind], Field(kind, description=KIND)),
                        **fields)


def options_model(kind: str) -> type[OptimizerOptions]:
    """The model of the canonical ``kind``."""
    return KIND_MODELS.get(kind) or torch_options_model(kind)


def validate_options(key: str, name: str, table: object) -> OptimizerOptions:
    """The validated options of optimiser ``name`` (table key ``key``); ConfigError naming the key."""
    if isinstance(table, OptimizerOptions):
        table = table.model_dump()
    if not isinstance(table, dict):
        raise ConfigError(f"config key {key} must be a table, got {table!r} ({type(table).__name__})")
    kind = resolve_kind(key, table.get("kind", name))
    for option in table:
        if option in UNSUPPORTED_KEYS:
            raise ConfigError(f"config key {key}.{option} is not supported: {UNSUPPORTED_KEYS[option]}")
    model = options_model(kind)
    try:
        return model.model_validate({**table, "kind": kind})
    except ValidationError as error:
        raise config_error(error, model, key) from None


def check_model_kind(key: str, options: OptimizerOptions, model_kind: str) -> None:
    """ConfigError when ``options`` cannot train a ``model_kind`` network (gn needs a RevMLP)."""
    if options.kind == "gn" and model_kind != "revmlp":
        raise ConfigError(f"config key {key}: optimizer 'gn' needs model.kind = 'revmlp' (got {model_kind!r}); "
                          f"use 'kgn' for other models")

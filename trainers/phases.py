"""Optimiser phases: one run that switches optimiser at epoch boundaries (Buffelli et al. 2024, Fig. 7:
Adam for 50 epochs, then GN, and the reverse).

``train.phases`` is a list of tables ``{optimizer = NAME, epochs = E}`` (NAME an ``[optimizers.NAME]``
table or a kind); every phase but the last needs ``epochs``; the last runs to the end of training
(its ``epochs``, if given, must make the phases add up to the run's length). Phase p covers the steps
``start_p < t ≤ stop_p`` (t = 1 … T, the update that makes θ_t), ``start_0 = 0``,
``stop_p = start_p + E_p · steps_per_epoch``. At a switch the new optimiser starts fresh (no state
carried over; the parameters are continuous). The run's name is the phases' optimiser names joined
by "-then-" (``adam-then-gn``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamics.errors import ConfigError

SEPARATOR = "-then-"


@dataclass(frozen=True)
class Phase:
    """Phase ``index``: optimiser ``optimizer`` for the updates start < t ≤ stop."""

    index: int
    optimizer: str
    start: int
    stop: int


def phases_name(phases: list[dict]) -> str:
    """The run name of a phase list: optimiser names joined by "-then-"."""
    return SEPARATOR.join(str(p["optimizer"]) for p in phases)


def phase_plan(phases: list[dict], steps_per_epoch: int, total_steps: int) -> list[Phase]:
    """The phases as step ranges; ConfigError naming ``train.phases`` when they do not fit the run."""
    if not phases:
        raise ConfigError("config key train.phases is empty; give at least two phases or leave it out")
    plan, start = [], 0
    for i, phase in enumerate(phases):
        epochs = phase.get("epochs")
        last = i == len(phases) - 1
        if epochs is None and not last:
            raise ConfigError(f"config key train.phases[{i}].epochs is missing; every phase but the last needs it")
        stop = total_steps if epochs is None else start + int(epochs) * steps_per_epoch
        if stop > total_steps or stop <= start or (last and stop != total_steps):
            raise ConfigError(f"config key train.phases[{i}] (epochs = {epochs!r}) does not fit a run of "
                              f"{total_steps} steps ({steps_per_epoch} per epoch): phases must cover it exactly, "
                              f"each at least one epoch")
        plan.append(Phase(i, str(phase["optimizer"]), start, stop))
        start = stop
    return plan


def phase_at(plan: list[Phase], step: int) -> Phase:
    """The phase of the update that makes θ_{step+1} (``step`` updates already done)."""
    for phase in plan:
        if step < phase.stop:
            return phase
    return plan[-1]


def run_phases(phases: list, optimizer: str) -> list[dict] | None:
    """The phase tables (as dicts) when ``optimizer`` names the phased run of ``phases``
    (``train.phases``, PhaseConfig models or dicts), else None (a one-optimiser run)."""
    tables = [p.model_dump() if hasattr(p, "model_dump") else dict(p) for p in phases]
    return tables if tables and optimizer == phases_name(tables) else None


class PhaseSteppers:
    """The optimiser of each phase, built when its phase begins: ``make(name)`` → a fresh stepper."""

    def __init__(self, plan: list[Phase], make) -> None:
        self.plan, self.make = plan, make
        self.index, self.current = -1, None

    def use(self, index: int):
        """The stepper of phase ``index`` (a fresh one when the phase changes)."""
        if not 0 <= index < len(self.plan):
            raise ConfigError(f"resume state names phase {index}, but the run has {len(self.plan)} phase(s)")
        if index != self.index:
            self.current, self.index = self.make(self.plan[index].optimizer), index
        return self.current

    def at(self, step: int):
        """The stepper of the update that makes θ_{step+1}."""
        return self.use(phase_at(self.plan, step).index)

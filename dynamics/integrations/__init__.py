"""Thin adapters to the places researchers already train and look at runs (optional extras).

- :mod:`dynamics.integrations.lightning`: ``DynamicsCallback`` for ``lightning.pytorch.Trainer``, and
  ``LightningGN`` to make a Gauss–Newton solver the optimiser of a LightningModule;
- :mod:`dynamics.integrations.huggingface`: ``DynamicsCallback`` for ``transformers.Trainer``;
- :mod:`dynamics.integrations.mirrors`: ``TensorBoardMirror`` and ``WandbMirror`` for
  ``Recorder(..., mirror=[...])`` (:mod:`dynamics.mirrors`);
- :mod:`dynamics.integrations.tensorboard`: a run store as TensorBoard event files
  (``dynamics export tensorboard``).

Each module imports its framework when it is imported (or used), never before; nothing in the core
imports this package. The extras: ``pip install "gn-dynamics[lightning]"`` (``huggingface``,
``tensorboard``, ``wandb``). User guide: docs/guide/integrations.md.
"""

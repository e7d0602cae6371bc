"""``python lightning_ddp.py OUT``: a 2-process ``Trainer(strategy="ddp", accelerator="cpu", devices=2)`` (gloo)
with DynamicsCallback, launched by Lightning itself (it starts rank 1 by running this script again).

Every rank also writes ``OUT/rank<R>.json``: the loss of its own batch before each update (from
``training_step``) and after it (a forward pass of its own, here), and its final parameters.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from dynamics.integrations.lightning import DynamicsCallback  # noqa: E402
from dynamics.schedules import every  # noqa: E402
from lit_models import Classifier, data, loader  # noqa: E402


class PerRank(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        x, y = batch
        with torch.no_grad():
            after = float(torch.nn.functional.cross_entropy(pl_module(x), y))
        self.rows.append({"step": trainer.global_step, "loss": float(outputs["loss"]), "loss_after": after})


def main(out: Path) -> None:
    x, y = data()
    existed = (out / "ddp.zarr").exists()
    per_rank = PerRank()
    cb = DynamicsCallback(out / "ddp.zarr", probe=(x[:8], y[:8]), schedule=every(2), layers=[],
                          held_out=(x[:10], y[:10]))
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[cb, per_rank])
    module = Classifier()
    trainer.fit(module, loader(x, y, batch=8))
    rank = trainer.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": trainer.world_size, "recorder": type(cb.recorder).__name__, "store_existed": existed,
        "rows": per_rank.rows, "params": {k: v.detach().tolist() for k, v in module.named_parameters()}}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""A DDP training job with a Recorder, run by ``torchrun --nproc_per_node 2`` (gloo, CPU) in the tests.

``python ddp_train.py OUT``: every rank trains the same MLP wrapped in DistributedDataParallel on its
own half of each batch, records into ``OUT/run.zarr`` through the same Recorder calls, and writes
``OUT/rank<R>.json`` (what its Recorder was, whether the store existed when it was constructed) and
``OUT/rank<R>.npz`` (its final parameters and, brute force, the traced NTK of its final model on the
probe inputs: J Jᵀ summed over outputs with J from torch.func.jacrev).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.func import functional_call, jacrev

from dynamics import Recorder
from dynamics.models import MLP
from dynamics.schedules import every

STEPS = 6


def brute_force_ntk(model, x):
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)          # name → (N, O, *shape)
    flat = torch.cat([j.reshape(x.shape[0], -1, j[0, 0].numel()) for j in jac.values()], dim=2)  # (N, O, P)
    return torch.einsum("aop,bop->ab", flat, flat)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    net = MLP(6, 8, 2, 3, seed=0, dtype=torch.float64)
    model = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    existed = (out / "run.zarr").exists()
    with Recorder(out / "run.zarr", model, probe=(x[:10], y[:10]), schedule=every(2)) as rec:
        info = {"rank": rank, "class": type(rec).__name__, "store_existed": existed, "is_recorder":
                isinstance(rec, Recorder)}
        rec.checkpoint(0)
        for step in range(1, STEPS + 1):
            batch = slice(rank * 8 + step * 16, rank * 8 + step * 16 + 8)
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            rec.log(step, loss=float(mean) / world)
            rec.checkpoint(step)
    dist.barrier()
    (out / f"rank{rank}.json").write_text(json.dumps(info))
    np.savez(out / f"rank{rank}.npz", ntk=brute_force_ntk(net, x[:10]).numpy(),
             **{k.replace(".", "__"): v.detach().numpy() for k, v in net.named_parameters()})
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

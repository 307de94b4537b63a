"""VTC's gather-with-gradient path on two CPU processes (gloo): the loss and the data-parallel-averaged gradients equal
those of one process holding the whole batch, with repeated ids across the two processes, with and without samples
left out by `valid` (clips without an audio track in stage 2's audio-text losses)."""
import os
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from iv2.contrastive import vtc_loss, gather_no_grad
from iv2.engine import free_port

B, D_IN, D = 3, 5, 4
VALID = torch.tensor([True, False, True, True, True, False])   # one left out on each process


def _batch():
    g = torch.Generator().manual_seed(0)
    xv, xt = torch.randn(2 * B, D_IN, generator=g), torch.randn(2 * B, D_IN, generator=g)
    ids = torch.tensor([0, 1, 2, 2, 4, 0])         # clip 2 straddles the two processes, clip 0 too
    return xv, xt, ids


def _models():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)


def _worker(rank, port, out, use_valid):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    xv, xt, ids = _batch()
    fv, ft = _models()
    sl = slice(rank * B, (rank + 1) * B)
    loss = vtc_loss(fv(xv[sl]), ft(xt[sl]), 0.1, ids=ids[sl], valid=VALID[sl] if use_valid else None)
    loss.backward()
    grads = []
    for p in list(fv.parameters()) + list(ft.parameters()):   # what DDP / DeepSpeed do: average over processes
        dist.all_reduce(p.grad); grads.append(p.grad / 2)
    assert gather_no_grad(ids[sl]).tolist() == ids.tolist()
    out[rank] = (loss.item(), [g.clone() for g in grads])
    dist.destroy_process_group()


@pytest.mark.parametrize("use_valid", [False, True])
def test_vtc_two_processes_match_one(use_valid):
    xv, xt, ids = _batch()
    fv, ft = _models()
    ref = vtc_loss(fv(xv), ft(xt), 0.1, ids=ids, valid=VALID if use_valid else None)
    ref.backward()
    ref_grads = [p.grad for p in list(fv.parameters()) + list(ft.parameters())]
    out = mp.Manager().dict()
    mp.start_processes(_worker, args=(free_port(), out, use_valid), nprocs=2, start_method="spawn", join=True)
    for rank in (0, 1):
        loss, grads = out[rank]
        assert loss == pytest.approx(ref.item(), abs=1e-5)
        for g, r in zip(grads, ref_grads): torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)

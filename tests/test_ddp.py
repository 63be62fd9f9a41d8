"""DDP on the CPU: two Gloo processes train the same tiny model and must end with identical weights.

The processes are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address in the environment), so ``glia_edge.train.train`` takes its distributed path:
Gloo process group, DistributedSampler shards, gradient all-reduce, rank-0 writes.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _data_fixtures import TINY_OVERRIDES, make_blur_set
from glia_edge.train import TrainConfig, train

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, labels: str, out: str, cache: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLIA_EDGE_CACHE=cache)
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="csv", csv=labels, preset="glia_vit_tiny", backbone_weights="none",
                      model_overrides=dict(TINY_OVERRIDES), short_side=64, epochs=1, max_steps=4, batch_size=8,
                      workers=0, device="cpu", progress=False, output=out, splits_file=str(Path(out) / "splits.json"))
    result = train(cfg)
    torch.save({"weights": result.model.trainable_state_dict(), "history": result.history},
               Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_weights(tmp_path: Path) -> None:
    labels = make_blur_set(tmp_path / "data", photos=("astronaut", "coffee", "chelsea", "rocket", "camera"))
    out = tmp_path / "run"
    mp.spawn(_worker, args=(_free_port(), str(labels), str(out), str(tmp_path / "cache")), nprocs=WORLD, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    assert ranks[0]["history"][-1]["step"] == 4
    assert (out / "last.safetensors").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 1

    # The all-reduce did something: the adapters moved away from their seeded initial values.
    torch.manual_seed(3407)
    from glia_edge.models import create_model

    init = create_model("glia_vit_tiny", **TINY_OVERRIDES).trainable_state_dict()
    moved = [k for k in w0 if k.endswith("weight") and not torch.equal(init[k], w0[k])]
    assert len(moved) > len(w0) // 4


@pytest.mark.parametrize("device", ["cpu"])
def test_single_process_context_is_not_distributed(device: str) -> None:
    from glia_edge.distributed import DistContext

    ctx = DistContext.setup(device)
    assert not ctx.enabled and ctx.is_main and ctx.gather(7) == [7]
    ctx.barrier()
    ctx.close()


@pytest.mark.slow
def test_the_train_command_runs_under_torchrun(tmp_path: Path) -> None:
    """The user's path: ``torchrun --nproc_per_node 2 -m glia_edge train ...`` on CPUs (Gloo)."""
    import subprocess
    import sys

    labels = make_blur_set(tmp_path / "data")
    opts = [f"--model-opt={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY_OVERRIDES.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "glia_edge", "train", "--dataset", "csv", "--csv", str(labels), "--preset", "glia_vit_tiny",
           "--backbone-weights", "none", *opts, "--short-side", "64", "--epochs", "2", "--batch-size", "8",
           "--workers", "0", "--device", "cpu", "--no-progress", "--output", str(tmp_path / "run")]
    env = {**os.environ, "GLIA_EDGE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (tmp_path / "run" / "best.safetensors").is_file()
    assert "rank 0 of 2" in done.stderr + done.stdout

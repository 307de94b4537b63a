"""The engine under DeepSpeed on CPU: a two-process run through the `deepspeed` launcher, and single-process ZeRO runs.

The first DeepSpeed start on a machine JIT-builds the shm comm op into TORCH_EXTENSIONS_DIR (<project>/.cache)."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
from iv2.engine import deepspeed_launcher
DS = deepspeed_launcher()
pytestmark = pytest.mark.skipif(DS is None, reason="deepspeed launcher not installed")


def _env() -> dict:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"): env.pop(k, None)
    return env


def _metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    from iv2.engine import EngineConfig, launch
    t = tmp_path_factory.mktemp("engine_ds2")
    ids = t / "ids"; ids.mkdir()
    cfg = EngineConfig(backend="deepspeed", zero_stage=1, precision="fp32", micro_batch=4, grad_accum=2, base_lr=0.2,
                       warmup_steps=1, total_steps=8, ckpt_every=4, keep_last=2, deterministic=True,
                       stage_args={"n_samples": 64, "ids_dir": str(ids)})
    res = launch("iv2.engine:toy_stage", cfg, "ds2", t / "runs", nprocs=2, launcher="deepspeed")   # the run notebooks' path
    assert res["world_size"] == 2 and res["state_dict"]["fc1.weight"].shape == (32, 8)
    assert (t / "runs" / "ds2" / "launch.yaml").exists() and "--num_accelerators 2" in (t / "runs" / "ds2" / "launch.log").read_text()
    return t, cfg


def test_two_ranks_ran_with_the_global_batch(two_rank_run):
    t, cfg = two_rank_run
    run = t / "runs" / "ds2"
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2 and env["global_batch"] == 4 * 2 * 2
    ds = json.loads((run / "ds_config.json").read_text())
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 2, 16)
    m = _metrics(run)
    assert [r["step"] for r in m] == list(range(1, 9)) and all(r["world_size"] == 2 for r in m)
    done = json.loads((run / "done.json").read_text())
    assert done["step"] == 8 and done["world_size"] == 2
    # DeepSpeed's own checkpoint files, with one data/RNG record per rank
    last = run / "ckpt" / "step_000008"
    assert (last / "rank0.json").exists() and (last / "rank1.json").exists() and (last / "ds").is_dir()
    from iv2.checkpoints import load_checkpoint
    sd, meta = load_checkpoint(last / "model.safetensors")       # gathered weights for evaluation
    assert meta["step"] == 8 and sd["fc1.weight"].shape == (32, 8)
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["step_000004", "step_000008"]


def test_data_shards_are_disjoint(two_rank_run):
    t, cfg = two_rank_run
    seen = {}
    for r in (0, 1):
        lines = (t / "ids" / f"ids_rank{r}.txt").read_text().split("\n")
        seen[r] = [int(i) for l in lines if l.strip() for i in l.split()]
    # 8 steps x 2 micro-batches x 4 samples per rank = 64 samples per rank = 2 epochs of 32
    assert len(seen[0]) == len(seen[1]) == 64
    for ep in range(2):
        a, b = set(seen[0][ep * 32:(ep + 1) * 32]), set(seen[1][ep * 32:(ep + 1) * 32])
        assert len(a) == len(b) == 32 and not a & b and a | b == set(range(64)), ep


def test_loss_decreases(two_rank_run):
    t, cfg = two_rank_run
    m = _metrics(t / "runs" / "ds2")
    assert m[-1]["loss"] < 0.7 * m[0]["loss"], [r["loss"] for r in m]
    from iv2.engine import lr_at
    assert [round(r["lr"], 9) for r in m] == [round(lr_at(s, cfg, 2), 9) for s in range(8)]


@pytest.mark.parametrize("zero", [1, 2])
def test_single_process_zero_bf16_and_resume(tmp_path, zero):
    """`python -m iv2.engine` without the launcher (the engine sets the rendezvous env itself), ZeRO-1/2 in bf16: the loss
    falls; after a simulated crash (last checkpoint and done.json removed) the same command resumes through
    DeepSpeed's load_checkpoint and ends at the same loss."""
    from iv2.engine import EngineConfig
    cfg = EngineConfig(backend="deepspeed", zero_stage=zero, precision="bf16", micro_batch=8, grad_accum=2, base_lr=0.2,
                       warmup_steps=1, total_steps=8, ckpt_every=4, keep_last=3, deterministic=True,
                       stage_args={"n_samples": 64})
    cfg.to_yaml(tmp_path / "cfg.yaml")
    cmd = [sys.executable, "-m", "iv2.engine", "--stage", "iv2.engine:toy_stage", "--config", str(tmp_path / "cfg.yaml"),
           "--run-name", f"z{zero}", "--runs-root", str(tmp_path / "runs"), "--no-progress"]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    run = tmp_path / "runs" / f"z{zero}"
    m = _metrics(run)
    assert len(m) == 8 and m[-1]["loss"] < 0.7 * m[0]["loss"], [x["loss"] for x in m]
    assert json.loads((run / "ds_config.json").read_text())["zero_optimization"]["stage"] == zero
    final = json.loads((run / "done.json").read_text())["final"]
    (run / "done.json").unlink(); shutil.rmtree(run / "ckpt" / "step_000008")
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    done = json.loads((run / "done.json").read_text())
    assert done["resumed_from"] == 4
    for k, v in final.items(): assert abs(done["final"][k] - v) <= 1e-6 * max(1.0, abs(v)), (k, v, done["final"][k])
    assert [x["step"] for x in _metrics(run)] == list(range(1, 9))

"""The shard reader under the deepspeed launcher on CPU: two processes, one reader per rank, no sample on both ranks.

Seven tiny clips in four shards of [2, 2, 2, 1] samples: each epoch the two ranks get two shards each, so one rank holds
4 samples and the other 3, and both yield 3 (`samples_per_rank`); the fourth of the longer rank is the dropped remainder.
The probe stage (`iv2.data.shards:shard_probe_stage`) decodes every item and appends the ids each rank trained on to
`keys_rank<r>.txt`. The first DeepSpeed start on a machine JIT-builds the shm comm op into TORCH_EXTENSIONS_DIR."""
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
from iv2.engine import deepspeed_launcher
DS = deepspeed_launcher()
pytestmark = pytest.mark.skipif(DS is None, reason="deepspeed launcher not installed")


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory):
    from iv2.data.manifest import ClipRecord, write_manifest
    from iv2.data.media import write_test_clip
    from iv2.data.shards import write_shards
    from iv2.engine import EngineConfig, launch
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    t = tmp_path_factory.mktemp("shards_ds2")
    recs = []
    for i in range(7):
        write_test_clip(t / "videos" / f"c{i}.mp4", num_frames=10, width=64, height=32, x0=i, tone_hz=None)
        recs.append(ClipRecord(id=f"c{i}", video=f"videos/c{i}.mp4", labels={"action_id": i}))
    write_manifest(recs, t / "manifest.jsonl")
    ix = write_shards(t / "manifest.jsonl", t / "shards", clips_per_shard=2)
    assert [s["count"] for s in ix["shards"]] == [2, 2, 2, 1] and ix["skipped"] == 0
    keys = t / "keys"; keys.mkdir()
    cfg = EngineConfig(backend="deepspeed", zero_stage=1, precision="fp32", micro_batch=1, grad_accum=1, base_lr=0.01,
                       warmup_steps=1, total_steps=6, ckpt_every=2, keep_last=3, deterministic=True, seed=11,
                       stage_args={"shards": str(t / "shards"), "keys_dir": str(keys), "num_frames": 2, "size": 16})
    res = launch("iv2.data.shards:shard_probe_stage", cfg, "shards2", t / "runs", nprocs=2, launcher="deepspeed")
    assert res["world_size"] == 2
    first = {r: (keys / f"keys_rank{r}.txt").read_text() for r in (0, 1)}
    # a crash after step 4 (epoch 1, one micro-batch in): the relaunch resumes the shard streams at micro-batch 1
    import json, shutil
    run = t / "runs" / "shards2"
    (run / "done.json").unlink(); shutil.rmtree(run / "ckpt" / "step_000006")
    res = launch("iv2.data.shards:shard_probe_stage", cfg, "shards2", t / "runs", nprocs=2, launcher="deepspeed")
    assert json.loads((run / "done.json").read_text())["resumed_from"] == 4
    resumed = {r: (keys / f"keys_rank{r}.txt").read_text()[len(first[r]):] for r in (0, 1)}
    return t, cfg, resumed


def _seen(t: Path, rank: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in (t / "keys" / f"keys_rank{rank}.txt").read_text().splitlines()[:6]:      # the first launch
        ep, cid = line.split()
        out.setdefault(int(ep), []).append(cid)
    return out


def test_ranks_see_disjoint_samples_covering_all_but_the_remainder(shard_run):
    from iv2.data.shards import ShardReader
    t, cfg, _ = shard_run
    seen = {r: _seen(t, r) for r in (0, 1)}
    everything = {f"c{i}" for i in range(7)}
    reader = ShardReader(t / "shards", decode=False)
    for ep in (0, 1):                                    # 6 steps x 1 sample = 2 epochs of 3 samples per rank
        a, b = seen[0][ep], seen[1][ep]
        assert len(a) == len(b) == reader.per_rank(2, ep, cfg.seed) == 3, (ep, a, b)
        assert len(set(a)) == 3 and len(set(b)) == 3 and not set(a) & set(b), (ep, a, b)
        assert len(everything - set(a) - set(b)) == 7 - 2 * 3                   # the dropped remainder: one sample
        # exactly the shards shard_assignment gives each rank, read front to back
        for r, got in ((0, a), (1, b)):
            assert got == [x["id"] for x in reader.samples(r, 2, ep, cfg.seed)], (r, ep, got)
            want = {f"c{2 * s + j}" for s in reader.assignment(r, 2, ep, cfg.seed) for j in range(reader.counts[s])}
            assert set(got) <= want


def test_resume_continues_the_rank_streams(shard_run):
    "The relaunch trains steps 5 and 6: samples 1 and 2 of each rank's epoch-1 stream, the same as the first run's."
    from iv2.data.shards import ShardReader
    t, cfg, resumed = shard_run
    reader = ShardReader(t / "shards", decode=False)
    for r in (0, 1):
        want = [x["id"] for x in reader.samples(r, 2, 1, cfg.seed)][1:]
        assert resumed[r].split() == [w for cid in want for w in ("1", cid)], (r, resumed[r], want)
        assert want == _seen(t, r)[1][1:]

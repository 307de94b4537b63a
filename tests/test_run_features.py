"""The features run notebook (nbs/runs/features.ipynb) end to end through papermill, on a tiny world this test makes
itself (a few 64x64 clips at 10 fps) and a tiny random encoder (8 blocks, so the paper's block -7 exists)."""
import csv, json
from pathlib import Path
import numpy as np
import pytest
from iv2.reports import RunError, run_notebook

ENCODER = {"vision_preset": "tiny", "random_depth": 8, "size": 28, "batch_size": 16, "threads": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "Eight clips with train and held-out splits, plus one corrupt file in the manifest."
    from iv2.data.synth import SynthConfig, generate_world
    from iv2.data.manifest import read_manifest, write_manifest, ClipRecord
    t = tmp_path_factory.mktemp("features")
    cfg = SynthConfig(num_clips=8, width=64, height=64, fps=10, min_duration=2.0, max_duration=3.0, min_shot_frames=10,
                      speech_share=0.0, seed=0)
    man = generate_world(cfg, t / "world", num_workers=1, progress=False)
    recs = read_manifest(man)
    assert {r.split for r in recs} >= {"train"} and any(r.split in ("val", "test") for r in recs)
    (t / "world" / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    bad = ClipRecord(id="broken", video="videos/broken.mp4", split="train", labels={"action": "still", "action_id": 20})
    return t, write_manifest(recs + [bad], t / "world" / "manifest_with_broken.jsonl"), recs


@pytest.fixture(scope="module")
def features_run(world):
    t, man, recs = world
    rep = run_notebook("features", {**ENCODER, "manifest": str(man)}, runs_root=t / "runs", reports_root=t / "reports", progress=False)
    return t, man, recs, rep


def test_report_metrics(features_run):
    t, man, recs, rep = features_run
    side = json.loads((t / "reports" / "features.json").read_text())
    assert side == rep
    m = rep["metrics"]
    assert (m["videos"], m["videos_with_features"], m["skipped_videos"]) == (9, 8, 1)          # the corrupt file skipped
    assert (m["layer"], m["layer_index"], m["depth"], m["feature_dim"]) == (-7, 1, 8, 64)
    # 4-frame windows of consecutive frames every 4 frames, full windows only: (n - 4) // 4 + 1 per clip
    assert m["windows"] == sum((r.num_frames - 4) // 4 + 1 for r in recs)
    assert m["windows_per_s"] > 0 and m["videos_per_s"] > 0
    assert (m["rerun_resumed_videos"], m["rerun_extracted_videos"]) == (8, 0)
    assert sorted(m["window_probe_acc_by_layer"], key=int) == [str(l) for l in range(-8, 0)]
    assert all(0.0 <= v <= 1.0 for v in [*m["window_probe_acc_by_layer"].values(), *m["clip_probe_acc_by_layer"].values()])
    assert m["window_probe_acc_at_layer"] == m["window_probe_acc_by_layer"]["-7"]
    assert m["best_layer_window_probe"] in range(-8, 0)
    held = [r for r in recs if r.split in ("val", "test")]
    assert (m["sweep_train_clips"], m["sweep_held_out_clips"]) == (8 - len(held), len(held))
    assert m["sweep_test_windows"] == sum((r.num_frames - 4) // 4 + 1 for r in held)
    accs = list(m["window_probe_acc_by_layer"].values())
    assert m["window_probe_acc_spread"] == pytest.approx(max(accs) - min(accs), abs=2e-4)
    assert m["window_probe_acc_standard_error"] > 0
    assert "random init of tiny: 8 blocks, width 64" in rep["scale"]["encoder"] and "4 frames at 28px" in rep["scale"]["encoder"]
    assert rep["command"].startswith("iv2 run features -p vision_preset tiny -p random_depth 8")
    page = (t / "reports" / "features.html").read_text()
    assert page.count("data:image/png;base64,") >= 2                                          # feature map, layer sweep
    assert "Paper reference (InternVideo2, Table 23; not measured here)" in page


def test_feature_files_and_index(features_run):
    t, man, recs, rep = features_run
    out = Path(rep["run_dir"]) / "features"
    idx = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert sorted(d["video_id"] for d in idx) == sorted(r.id for r in recs)
    by_id = {r.id: r for r in recs}
    ck = str(Path(rep["run_dir"]) / "random_init.safetensors")
    for d in idx:
        r = by_id[d["video_id"]]
        n = (r.num_frames - 4) // 4 + 1
        assert (d["n_windows"], d["dim"], d["fps"], d["num_frames"], d["feature_file"]) == (n, 64, 10.0, r.num_frames, f"{r.id}.npy")
        assert d["window_starts"] == [4 * k for k in range(n)] and d["window_ends"] == [4 * k + 4 for k in range(n)]
        assert d["start_s"] == pytest.approx([0.4 * k for k in range(n)]) and d["end_s"] == pytest.approx([0.4 * k + 0.4 for k in range(n)])
        assert (d["layer"], d["layer_index"], d["checkpoint"], d["labels"]) == (-7, 1, ck, r.labels)
        assert d["config"]["stride"] == 4 and d["config"]["last"] == "drop" and d["config"]["size"] == 28
        a = np.load(out / d["feature_file"])
        assert a.shape == (n, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    assert [row["video_id"] for row in csv.DictReader(open(out / "index.csv"))] == [d["video_id"] for d in idx]
    skipped = [json.loads(l) for l in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["id"], s["reason"]) for s in skipped] == [("broken", "corrupt")]
    assert json.loads((out / "features.json").read_text())["settings"]["layer"] == -7


@pytest.mark.parametrize("params, message", [
    ({"last": "wrap"}, "parameter 'last': expected one of ['drop', 'pad', 'shift'], got 'wrap'"),
    ({"layer": -9}, "parameter 'layer': layer -9: the encoder has 8 blocks"),
])
def test_bad_parameters_are_named(tmp_path, params, message):
    with pytest.raises(RunError) as e:
        run_notebook("features", {**ENCODER, **params}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert message in str(e.value)
    assert not (tmp_path / "reports" / "features.html").exists()

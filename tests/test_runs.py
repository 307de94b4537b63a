"""Run notebooks end to end through papermill, at a size that fits CI (the full tiny preset runs in `make demo`)."""
import base64, json, re
import pytest
from iv2.reports import RunError, run_notebook


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    t = tmp_path_factory.mktemp("synth_world")
    params = {"num_clips": 12, "data_dir": str(t / "world"), "throughput_batches": 2, "batch_size": 2, "num_frames": 4, "loader_workers": 1}
    rep = run_notebook("synth_world", params, runs_root=t / "runs", reports_root=t / "reports", progress=False)
    return t, rep


def test_synth_world_report_json(synth_run):
    t, rep = synth_run
    side = json.loads((t / "reports" / "synth_world.json").read_text())
    assert side == rep
    for k in ("params", "metrics", "scale", "git_commit", "hardware", "wall_time_s", "command", "run_dir"):
        assert k in side, k
    m = side["metrics"]
    assert m["clips"] == 12 and m["clips_generated_this_run"] == 12
    assert m["bad_files_prescan"] == 0 and m["skipped_in_loader"] == 0
    assert 0 < m["train_clips"] <= 12 and m["loader_clips_per_s"] > 0 and m["loader_clips_per_s_audio"] > 0
    assert side["scale"]["preset"] == "tiny" and side["scale"]["clips"] == 12
    assert side["command"].startswith("iv2 run synth_world -p num_clips 12")
    assert side["hardware"]["cores"] >= 1 and side["wall_time_s"] > 0


def test_synth_world_report_html_is_self_contained(synth_run):
    t, rep = synth_run
    page = (t / "reports" / "synth_world.html").read_text()
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=\n]+)"', page)
    assert len(pngs) >= 4, "stats, frame grid, filterbanks and throughput plots are embedded"
    assert all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    for kind in ("| V |", "| A |", "| AV |", "| AVS |"):
        assert kind in page or kind.replace("| ", "<td>").replace(" |", "</td>") in page
    assert "synth_world.html" in (t / "reports" / "index.html").read_text()


def test_synth_world_rerun_reuses_the_world_in_a_new_run_dir(synth_run):
    t, rep = synth_run
    params = {"num_clips": 12, "data_dir": str(t / "world"), "throughput_batches": 1, "batch_size": 2, "num_frames": 2, "loader_workers": 1}
    rep2 = run_notebook("synth_world", params, runs_root=t / "runs", reports_root=t / "reports", progress=False)
    assert rep2["run_dir"] != rep["run_dir"]
    assert rep2["metrics"]["clips_generated_this_run"] == 0   # resumed: every clip was already on disk


@pytest.mark.parametrize("params, message", [
    ({"preset": "huge"}, "parameter 'preset': expected one of ['tiny', 'small'], got 'huge'"),
    ({"batch_size": 0}, "parameter 'batch_size': must be >= 1, got 0"),
    ({"seed": "zero"}, "parameter 'seed': expected int, got 'zero'"),
])
def test_bad_parameters_are_named(tmp_path, params, message):
    with pytest.raises(RunError) as e:
        run_notebook("synth_world", params, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert message in str(e.value)
    assert not (tmp_path / "reports" / "synth_world.html").exists()


def test_ceiling_trains_each_baseline_per_seed_and_scores_the_held_out_clips(synth_run):
    "The learnability control on the fixture's 12-clip world: curves per baseline and seed, accuracies on the held-out clips."
    from iv2.data.manifest import read_manifest
    t, _ = synth_run
    rep = run_notebook("ceiling", {"num_clips": 12, "data_dir": str(t / "world"), "baselines": "vit,c3d", "epochs": 2, "seeds": "0,1",
                                   "batch_size": 4}, runs_root=t / "runs_ceiling", reports_root=t / "reports_ceiling", progress=False)
    recs = read_manifest(t / "world" / "manifest.jsonl")
    n_test, n_train = sum(r.split in ("val", "test") for r in recs), sum(r.split == "train" for r in recs)
    m = rep["metrics"]
    assert (m["test_clips"], m["train_clips"], m["chance"]) == (n_test, n_train, round(1 / 21, 4))
    assert set(rep["curves"]) == {"vit/seed0", "vit/seed1", "c3d/seed0", "c3d/seed1"}
    for b in ("vit", "c3d"):
        runs = [rep["curves"][f"{b}/seed{s}"] for s in (0, 1)]
        assert all([e["epoch"] for e in h] == [1, 2] for h in runs)
        for h in runs:                                                     # an accuracy is a count of held-out clips
            assert all(abs(e["test_acc"] * n_test - round(e["test_acc"] * n_test)) < 1e-6 for e in h)
        assert m[f"{b}_test_acc"] == pytest.approx(sum(h[-1]["test_acc"] for h in runs) / 2, abs=1e-4)
        assert m[f"{b}_best_test_acc"] >= m[f"{b}_test_acc"] - 1e-4
    assert m["vit_params"] != m["c3d_params"] > 0
    page = (t / "reports_ceiling" / "ceiling.html").read_text()
    assert page.count("data:image/png;base64,") >= 1 and "no counterpart" in page
    with pytest.raises(RunError) as e:
        run_notebook("ceiling", {"num_clips": 12, "data_dir": str(t / "world"), "baselines": "vit,resnet"},
                     runs_root=t / "runs_ceiling", reports_root=t / "reports_bad", progress=False)
    assert "parameter 'baselines'" in str(e.value)


@pytest.fixture(scope="module")
def teachers_and_stage1(tmp_path_factory):
    "The teachers run and a stage-1 run on a 12-clip world, a few steps each (the full tiny runs are `make demo`)."
    t = tmp_path_factory.mktemp("stage1")
    world = str(t / "world")
    common = {"num_clips": 12, "data_dir": world, "batch_size": 4}
    rep_t = run_notebook("teachers", {**common, "clip_steps": 3, "mae_steps": 3}, runs_root=t / "runs",
                         reports_root=t / "reports", progress=False)
    rep_s = run_notebook("stage1", {**common, "batch_size": 2, "teachers_dir": rep_t["run_dir"], "steps": 2, "seeds": "0,1",
                                    "probe_batch": 4}, runs_root=t / "runs", reports_root=t / "reports", progress=False)
    return t, rep_t, rep_s


def test_teachers_run_writes_teachers_and_reports_their_quality(teachers_and_stage1):
    t, rep, _ = teachers_and_stage1
    m = rep["metrics"]
    from pathlib import Path
    from iv2.teachers import build_teacher
    assert Path(m["clip_teacher"]).exists() and Path(m["videomae_teacher"]).exists()
    assert build_teacher("iv2_clip", m["clip_teacher"]).num_layers >= 1             # loads as a stage-1 teacher
    for k in ("clip_zero_shot_shape", "clip_zero_shot_colour", "clip_zero_shot_action"):
        assert 0.0 <= m[k] <= 1.0
    assert m["mae_heldout_loss"] > 0 and m["clip_step_time_s"] > 0
    for n in ("clip", "mae"):                                                        # what the teachers' tokens know of the actions
        for w in ("", "_random_init"):
            assert all(0.0 <= m[f"{n}_tokens_{k}_probe{w}"] <= 1.0 for k in ("linear", "attentive"))
            e, c, s = (m[f"{n}_tokens_action_share_{k}{w}"] for k in ("energy", "centred", "scaled"))
            assert 0.0 <= e <= c <= 1.0 and 0.0 <= s <= 1.0                        # energy around zero >= variance around the mean
    page = (t / "reports" / "teachers.html").read_text()
    assert page.count("data:image/png;base64,") >= 4                     # curves, confusion, reconstructions, token probes
    assert "share of variance" in page


def test_stage1_run_reports_probe_means_over_seeds(teachers_and_stage1):
    t, _, rep = teachers_and_stage1
    m = rep["metrics"]
    assert len(m["linear_probe_acc_per_seed"]) == 2 == len(m["linear_probe_acc_random_init_per_seed"])
    assert abs(m["linear_probe_acc"] - sum(m["linear_probe_acc_per_seed"]) / 2) < 1e-3
    assert abs(m["linear_probe_acc_random_init"] - sum(m["linear_probe_acc_random_init_per_seed"]) / 2) < 1e-3
    assert m["time_per_step_s"] > 0 and m["clips_per_s"] > 0
    assert rep["scale"]["seeds"] == [0, 1] and "semantic" in rep["scale"]["mask"]
    assert -1 <= m["motion_head_cos"] <= 1 and 0 <= m["linear_probe_acc_motion_head"] <= 1          # the motion-head diagnostic
    for sd in (0, 1): assert (t / "runs" / rep["run_dir"].split("/")[-1] / f"seed{sd}" / "done.json").exists()
    assert "stage1.html" in (t / "reports" / "index.html").read_text()


def test_teachers_and_student_share_a_finer_token_grid(teachers_and_stage1):
    "patch_size / mae_dim reach the teachers' checkpoints; the student takes their patch size unless told otherwise."
    t, _, _ = teachers_and_stage1
    world = str(t / "world")
    rep_t = run_notebook("teachers", {"num_clips": 12, "data_dir": world, "batch_size": 4, "clip_steps": 2, "mae_steps": 2,
                                      "patch_size": 8, "mae_dim": 48, "mae_heads": 2, "mae_mask_ratio": 0.75},
                         runs_root=t / "runs_p8", reports_root=t / "reports_p8", progress=False)
    from iv2.teachers import load_teacher_model
    _, mm = load_teacher_model(rep_t["metrics"]["clip_teacher"]); _, mo = load_teacher_model(rep_t["metrics"]["videomae_teacher"])
    assert (mm.patch_size, mo.patch_size, mo.mae_dim, mo.mae_heads, mo.decoder_dim, mo.mask_ratio) == (8, 8, 48, 2, 24, 0.75)
    assert "patch 8" in rep_t["scale"]["model"] and "VideoMAE 48x3" in rep_t["scale"]["model"] and "masking 0.75" in rep_t["scale"]["model"]
    rep_s = run_notebook("stage1", {"num_clips": 12, "data_dir": world, "batch_size": 2, "teachers_dir": rep_t["run_dir"],
                                    "steps": 2, "seeds": "0", "probe_batch": 4, "teachers": "motion_only", "mask_kind": "random"},
                         runs_root=t / "runs_p8", reports_root=t / "reports_p8", progress=False)
    assert "patch 8," in rep_s["scale"]["student"]                                  # the motion teacher's patch, taken by default
    m = rep_s["metrics"]                                                             # the diagnostic: the motion head against the teacher
    assert 0 < m["motion_head_cos"] < 1 and m["linear_probe_acc_motion_head"] >= 0
    for bad, msg in (({"mae_dim": 50, "mae_heads": 4}, "mae_dim"), ({"patch_size": 10}, "img_size")):   # refused before training
        with pytest.raises(RunError) as e:
            run_notebook("teachers", {"num_clips": 12, "data_dir": world, **bad}, runs_root=t / "runs_bad", reports_root=t / "reports_bad", progress=False)
        assert "parameters patch_size / mae_dim" in str(e.value) and msg in str(e.value)
    with pytest.raises(RunError, match="mae_mask_ratio"):                           # a ratio VideoMAE cannot train with
        run_notebook("teachers", {"num_clips": 12, "data_dir": world, "mae_mask_ratio": 0.99}, runs_root=t / "runs_bad", reports_root=t / "reports_bad", progress=False)
    assert not (t / "runs_bad").exists() or not any((t / "runs_bad").glob("teachers-*/clip"))
    # stages 2 and 3 pick the patch size up from the upstream runs (the random-init controls too), as they do the tubelet
    rep2 = run_notebook("stage2", {"num_clips": 12, "data_dir": world, "stage1_dir": rep_s["run_dir"], "steps": 1, "batch_size": 4,
                                   "seeds": "0", "eval_split": "train", "itm_k": 3},
                        runs_root=t / "runs_p8", reports_root=t / "reports_p8", progress=False)
    assert "patch 8," in rep2["scale"]["video encoder"]
    rep3 = run_notebook("stage3", {"num_clips": 12, "data_dir": world, "stage2_dir": rep2["run_dir"] + "/stage1-seed0", "num_frames": 4,
                                   "steps": 1, "batch_size": 2, "eval_split": "train", "max_new_tokens": 3, "seeds": "0",
                                   "max_eval_items": 2, "chat_clips": 1, "hd_steps": 1},
                        runs_root=t / "runs_p8", reports_root=t / "reports_p8", progress=False)
    assert "patch 8," in rep3["scale"]["model"]
    rep_a = run_notebook("eval_action", {"encoder_dir": rep_s["run_dir"], "num_clips": 12, "data_dir": world, "methods": "linear,finetune",
                                         "test_clips": 1, "test_crops": 1, "ft_steps": 1, "ft_batch": 2, "batch_size": 4},
                         runs_root=t / "runs_p8", reports_root=t / "reports_p8", progress=False)   # fine-tuning builds an 8-px ViT too
    assert 0 <= rep_a["metrics"]["finetune_top1"] <= 1
    with pytest.raises(RunError) as e:                                               # a 14-px student on 8-px teachers
        run_notebook("stage1", {"num_clips": 12, "data_dir": world, "teachers_dir": rep_t["run_dir"], "student_patch": 14},
                     runs_root=t / "runs_p8", reports_root=t / "reports_p8", progress=False)
    assert "same token grid" in str(e.value)


def test_teachers_world_preset_keeps_the_teacher_preset(tmp_path, monkeypatch):
    """`world_preset small` picks the world (runs/datasets/synth-small-...) and keeps the tiny (56-px) teachers, as
    `make reproduce PRESET=small` needs them for the tiny student. In a temporary project (IV2_ROOT) so the world it
    generates stays out of the checkout's runs/."""
    from iv2.config import project_root
    nb = project_root() / "nbs" / "runs" / "teachers.ipynb"
    monkeypatch.setenv("IV2_ROOT", str(tmp_path))
    rep_t = run_notebook(nb, {"world_preset": "small", "num_clips": 12, "batch_size": 4, "clip_steps": 1, "mae_steps": 1},
                         progress=False)
    assert (tmp_path / "runs" / "datasets" / "synth-small-s0-n12" / "manifest.jsonl").exists()
    assert "synth-small-s0-n12" in rep_t["scale"]["data"]
    from iv2.teachers import load_teacher_model
    _, mm = load_teacher_model(rep_t["metrics"]["clip_teacher"]); _, mo = load_teacher_model(rep_t["metrics"]["videomae_teacher"])
    assert (mm.img_size, mo.img_size) == (56, 56) and "56px" in rep_t["scale"]["model"]


def test_stage1_bad_parameters_are_named(tmp_path):
    with pytest.raises(RunError) as e:
        run_notebook("stage1", {"teachers": "motion_only", "mask_kind": "semantic"}, runs_root=tmp_path / "runs",
                     reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'mask_kind'" in str(e.value)
    with pytest.raises(RunError) as e:
        run_notebook("stage1", {"seeds": "a,b"}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'seeds'" in str(e.value)
    with pytest.raises(RunError) as e:
        run_notebook("stage1", {"centre_momentum": 1.0}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'centre_momentum'" in str(e.value)
    with pytest.raises(RunError) as e:                                               # scaling needs the centre's statistics
        run_notebook("stage1", {"target_scale": True}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'target_scale'" in str(e.value)


def test_stage1_under_the_deepspeed_launcher_on_two_processes(teachers_and_stage1):
    "The same run notebook with launcher=deepspeed, nprocs=2: two CPU ranks, each half of the batch; probes on the result."
    from pathlib import Path
    from iv2.engine import deepspeed_launcher
    if deepspeed_launcher() is None: pytest.skip("deepspeed launcher not installed")
    t, rep_t, _ = teachers_and_stage1
    rep = run_notebook("stage1", {"num_clips": 12, "data_dir": str(t / "world"), "teachers_dir": rep_t["run_dir"], "steps": 2,
                                  "seeds": "0", "batch_size": 4, "probe_batch": 4, "launcher": "deepspeed", "nprocs": 2,
                                  "centre_momentum": 0.5, "target_scale": True},  # the centres' batch statistics are averaged across the ranks
                       runs_root=t / "runs_ds", reports_root=t / "reports_ds", progress=False)
    seed_dir = Path(rep["run_dir"]) / "seed0"
    env = json.loads((seed_dir / "env.json").read_text())
    assert env["world_size"] == 2 and env["global_batch"] == 4
    ds = json.loads((seed_dir / "ds_config.json").read_text())
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["train_batch_size"] == 4
    log = (seed_dir / "launch.log").read_text()
    assert "--num_accelerators 2" in log
    from iv2.engine import shm_buffers                              # the CPU ranks' shared-memory buffers are gone with them
    port = int(re.search(r"--master_port (\d+)", log).group(1))
    assert shm_buffers(port) == []
    assert rep["scale"]["launcher"].startswith("deepspeed launcher, 2 process(es)")
    assert 0.0 <= rep["metrics"]["linear_probe_acc"] <= 1.0
    import torch
    from iv2.checkpoints import read_state_dict
    from iv2.engine import latest_checkpoint
    sd = read_state_dict(latest_checkpoint(seed_dir) / "model.safetensors")
    assert rep["scale"]["target_centring"] == "momentum 0.5, per-channel std scaled"
    for k in ("clip_centre", "mae_centre"):                       # both teachers' targets centred and scaled, once per step
        assert int(sd[f"{k}.updates"]) == 2 and sd[f"{k}.centre"].abs().sum() > 0
        assert sd[f"{k}.var"].min() > 0 and not torch.allclose(sd[f"{k}.var"], torch.ones_like(sd[f"{k}.var"]))


def test_table16_grid_runs_every_point_and_cites_the_paper(teachers_and_stage1):
    t, rep_t, _ = teachers_and_stage1
    rep = run_notebook("ablation_teachers", {"teacher_settings": "mm_only,both", "worlds": "tiny,tiny", "world_clips": "12,16",
                                             "probe_world": "tiny", "probe_clips": 16, "datasets_dir": str(t / "datasets"),
                                             "teachers_dir": rep_t["run_dir"], "steps": 1, "seeds": "0", "batch_size": 2,
                                             "probe_batch": 4},
                       runs_root=t / "runs_grid", reports_root=t / "reports_grid", progress=False)
    grid = rep["metrics"]["grid"]
    assert [(p["teachers"], p["world"], p["train_clips"]) for p in grid] == [
        ("mm_only", "tiny (n=12)", grid[0]["train_clips"]), ("both", "tiny (n=12)", grid[0]["train_clips"]),
        ("mm_only", "tiny (n=16)", grid[2]["train_clips"]), ("both", "tiny (n=16)", grid[2]["train_clips"])]
    assert grid[0]["train_clips"] < grid[2]["train_clips"]                       # two data scales
    assert len({p["held_out_clips"] for p in grid}) == 1                          # one probe set for every point
    from pathlib import Path
    assert len(list((Path(rep["run_dir"]) / "points").glob("*/seed0/done.json"))) == 4
    page = (t / "reports_grid" / "ablation_teachers.html").read_text()
    assert "Paper reference (InternVideo2, Table 16; not measured here)" in page and "data:image/png;base64," in page
    # what an interruption during the last point leaves: the grid without run.json, that point without its run.json
    first = Path(rep["run_dir"])
    (first / "run.json").unlink()
    last = sorted((first / "points").glob("both-tiny-n16-*"))[0]
    (last / "run.json").unlink()
    since = json.loads((first / "start.json").read_text())["started"]
    again = run_notebook("ablation_teachers", rep["params"], runs_root=t / "runs_grid", reports_root=t / "reports_grid",
                         progress=False, resume_since=since)
    assert again["run_dir"] != str(first) and again["resumes"] == str(first)
    assert [p["reused"] for p in again["metrics"]["grid"]] == [True, True, True, False]
    assert [p["linear_probe_acc"] for p in again["metrics"]["grid"][:3]] == [p["linear_probe_acc"] for p in grid[:3]]
    assert [d.name.split("-2")[0] for d in (Path(again["run_dir"]) / "points").iterdir()] == ["both-tiny-n16"]
    reused = sum(json.loads(d.read_text())["wall_time_s"] for d in (first / "points").glob("*/run.json"))
    assert again["reused_wall_time_s"] == round(reused, 2)
    assert again["scale"]["points reused from an interrupted run"] == f"3 of 4 (from {first.name})"


def test_launcher_parameters_are_checked(tmp_path):
    with pytest.raises(RunError) as e:
        run_notebook("stage1", {"nprocs": 2}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'nprocs'" in str(e.value)
    with pytest.raises(RunError) as e:
        run_notebook("ablation_teachers", {"teacher_settings": "mm_only,clip"}, runs_root=tmp_path / "runs",
                     reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'teacher_settings'" in str(e.value)


@pytest.fixture(scope="module")
def stage2_run(teachers_and_stage1):
    "Stage 2 from the fixture's stage-1 students (seeds 0, 1) and from random init, two steps each, on the 12-clip world."
    t, _, rep_s1 = teachers_and_stage1
    rep = run_notebook("stage2", {"num_clips": 12, "data_dir": str(t / "world"), "stage1_dir": rep_s1["run_dir"], "steps": 2,
                                  "batch_size": 4, "seeds": "0,1", "eval_split": "train", "itm_k": 3},
                       runs_root=t / "runs_s2", reports_root=t / "reports_s2", progress=False)
    return t, rep_s1, rep


def _stage3_params(t, rep2, **kw) -> dict:
    "Stage-3 parameters on the fixture's 12-clip world and stage-2 encoder: 4 frames, 2 steps (no captioning sub-stage), batch 2."
    return {"num_clips": 12, "data_dir": str(t / "world"), "stage2_dir": rep2["run_dir"] + "/stage1-seed0", "num_frames": 4,
            "caption_steps": 0, "steps": 2, "batch_size": 2, "eval_split": "train", "max_new_tokens": 3, **kw}


def test_stage3_run_reports_mvbench_accuracy_against_random_init(stage2_run):
    "Stage 3 on the fixture's stage-2 encoder and on a random one, two steps each: the report's keys and evidence."
    from pathlib import Path
    t, _, rep2 = stage2_run
    rep = run_notebook("stage3", _stage3_params(t, rep2, seeds="0,1", max_eval_items=6, hd_steps=1, caption_steps=1),
                       runs_root=t / "runs_s3", reports_root=t / "reports_s3", progress=False)
    m = rep["metrics"]
    for k in ("mvbench_avg", "mvbench_avg_random_init", "mvbench_avg_strict", "chance"):
        assert 0.0 <= m[k] <= 1.0, (k, m)
    assert m["eval_items"] == 6 and len(m["mvbench_avg_per_seed"]) == 2 and m["tasks"] and set(m["tasks"]) == set(m["tasks_random_init"])
    assert m["mvbench_avg"] == pytest.approx(sum(m["mvbench_avg_per_seed"]) / 2, abs=1e-4)
    rd = Path(rep["run_dir"])
    samples = [json.loads(l) for l in (rd / "stage2-seed0" / "mvbench_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(s["gt"].startswith("(") and "prediction" in s for s in samples)
    assert (rd / "mvbench" / "tasks.json").exists() and (rd / "instructions.json").exists()
    page = (t / "reports_s3" / "stage3.html").read_text()
    assert "data:image/png;base64," in page and "not comparable at this scale" in page
    # the chat section: every held-out open turn (a caption + three questions per clip) answered by both models
    clips = {s["video"] for s in samples}
    assert set(m["open_qa_exact"]) == {"stage2", "random_init"} and m["open_qa_turns"] >= 4 * len(clips)
    assert "Exact match over" in page
    # the encoder probes: each scripted fact, read by a linear probe from both frozen encoders, beside the commonest answer
    assert set(m["encoder_probe"]) == {"colour", "shape", "action", "shots"} and "commonest answer" in page
    for f, row in m["encoder_probe"].items():
        assert set(row) == {"stage2", "random_init", "commonest answer"} and all(0.0 <= v <= 1.0 for v in row.values()), (f, row)
    # HD post-training from each stage-2 seed: 4 then 8 frames, 2 x 2 tiles + the thumbnail, scored as its own row
    assert 0.0 <= m["mvbench_avg_hd"] <= 1.0 and "mvbench_avg_strict_hd" in m
    for sd in (0, 1):
        assert (rd / f"hd4-seed{sd}" / "done.json").exists() and (rd / f"hd8-seed{sd}" / "mvbench_samples.jsonl").exists()
    assert "stage2-seed1" in (rd / "hd4-seed1" / "config.yaml").read_text()                     # HD starts from stage 3
    # the progressive sub-stages: captions and open questions first, then every turn from that checkpoint
    for v in ("stage2", "random_init"):
        cap, main = (rd / f"{v}-seed0-caption" / "config.yaml").read_text(), (rd / f"{v}-seed0" / "config.yaml").read_text()
        assert "train_turns: open" in cap and "train_turns: all" in main and f"init_from: {rd / (v + '-seed0-caption')}" in main


def test_stage3_under_the_deepspeed_launcher_on_two_processes(stage2_run):
    "Stage 3 on the one engine under the deepspeed launcher: 2 CPU processes share the global batch; the notebook scores the result."
    from pathlib import Path
    from iv2.engine import deepspeed_launcher
    if deepspeed_launcher() is None: pytest.skip("deepspeed launcher not installed")
    t, _, rep2 = stage2_run
    rep = run_notebook("stage3", _stage3_params(t, rep2, seeds="0", batch_size=4, max_eval_items=2, random_init_control=False,
                                                launcher="deepspeed", nprocs=2),
                       runs_root=t / "runs_s3ds", reports_root=t / "reports_s3ds", progress=False)
    d = Path(rep["run_dir"]) / "stage2-seed0"
    env = json.loads((d / "env.json").read_text())
    assert env["world_size"] == 2 and env["global_batch"] == 4
    assert "--num_accelerators 2" in (d / "launch.log").read_text()
    assert rep["scale"]["launcher"].startswith("deepspeed launcher, 2") and "mvbench_avg_random_init" not in rep["metrics"]
    assert rep["metrics"]["eval_items"] == 2


def test_llm_warmup_run_exports_the_llm_stage3_starts_from(stage2_run):
    "The text warm-up: its held-out curve and per-task scores, the exported transformers folder, and stage 3 from that folder."
    from pathlib import Path
    import torch
    from iv2.stages.stage3 import Stage3Config, build_llm
    from iv2.engine import latest_checkpoint
    from iv2.checkpoints import load_checkpoint
    t, _, rep2 = stage2_run
    rep = run_notebook("llm_warmup", {"num_clips": 12, "data_dir": str(t / "world"), "steps": 4, "batch_size": 4, "curve_points": 2,
                                      "option_orders": 2, "llm_layers": 1, "eval_split": "train", "max_eval_items": 6},
                       runs_root=t / "runs_w", reports_root=t / "reports_w", progress=False)
    m, rd = rep["metrics"], Path(rep["run_dir"])
    assert [s for s, _ in m["text_mc_curve"]] == [2, 4] and m["text_mc_avg"] == m["text_mc_curve"][-1][1] and m["eval_items"] == 6
    assert 0.0 <= m["text_mc_avg_strict"] <= 1.0 and m["tasks"] and 0.0 < m["chance"] < 1.0
    texts = json.loads((rd / "text_instructions.json").read_text())
    assert texts and all(r["text"] and r["QA"] for r in texts)
    llm_dir = Path(m["llm_dir"])
    assert llm_dir == rd / "llm" and (llm_dir / "config.json").exists()
    llm, tok = build_llm(Stage3Config(llm=str(llm_dir)))                 # the exported LLM holds the last checkpoint's weights
    ck = load_checkpoint(latest_checkpoint(rd / "train") / "model.safetensors")[0]
    sd = llm.state_dict()
    assert llm.config.num_hidden_layers == 1 and {"llm." + k for k in sd} == set(ck)
    assert all(torch.equal(v, ck["llm." + k]) for k, v in sd.items())
    page = (t / "reports_w" / "llm_warmup.html").read_text()
    assert "data:image/png;base64," in page and "Mistral-7B-Instruct" in page
    rep3 = run_notebook("stage3", _stage3_params(t, rep2, seeds="0", max_eval_items=2, random_init_control=False, llm=str(llm_dir)),
                        runs_root=t / "runs_s3w", reports_root=t / "reports_s3w", progress=False)
    assert f"llm: {llm_dir}" in (Path(rep3["run_dir"]) / "stage2-seed0" / "config.yaml").read_text() and str(llm_dir) in rep3["scale"]["model"]
    with pytest.raises(RunError) as e:
        run_notebook("stage3", _stage3_params(t, rep2, llm=str(t / "no_llm_here")), runs_root=t / "runs_s3x", reports_root=t / "reports_s3x", progress=False)
    assert "parameter 'llm'" in str(e.value) and "no_llm_here" in str(e.value)


def test_table19_grid_flips_only_the_qformer_question(stage2_run):
    "Table 19: two stage-3 points that differ in `qformer_instruction` alone, each a full stage-3 run, and the paper beside them."
    import yaml
    from pathlib import Path
    t, _, rep2 = stage2_run
    rep = run_notebook("ablation_stage3", _stage3_params(t, rep2, seeds="0", max_eval_items=4),
                       runs_root=t / "runs_t19", reports_root=t / "reports_t19", progress=False)
    m = rep["metrics"]
    assert [p["setting"] for p in m["grid"]] == ["with", "without"]
    for p in m["grid"]:
        assert m[f"mvbench_avg_{p['setting']}"] == p["mvbench_avg"] and p["eval_items"] == 4
        point = next((Path(rep["run_dir"]) / "points").glob(f"qformer-{p['setting']}-*"))
        cfg = yaml.safe_load((point / "stage2-seed0" / "config.yaml").read_text())
        assert cfg["stage_args"]["qformer_instruction"] is p["qformer_instruction"]
    page = (t / "reports_t19" / "ablation_stage3.html").read_text()
    assert "Paper reference (InternVideo2, Table 19; not measured here)" in page and "60.4" in page
    with pytest.raises(RunError) as e:
        run_notebook("ablation_stage3", {"settings": "with|maybe"}, runs_root=t / "runs_t19b", reports_root=t / "reports_t19b", progress=False)
    assert "parameter 'settings'" in str(e.value) and "maybe" in str(e.value)


def test_stage2_run_reports_retrieval_against_random_init(stage2_run):
    from pathlib import Path
    t, rep_s1, rep = stage2_run
    m = rep["metrics"]
    for k in ("t2v_r1", "v2t_r1", "t2v_r1_random_init", "v2t_r1_random_init", "chance_r1", "t2v_r1_itm", "t2v_r1_dsl",
              "zero_shot_action_acc", "time_per_step_s", "clips_per_s"):
        assert k in m, k
    assert len(m["t2v_r1_per_seed"]) == 2 == len(m["t2v_r1_random_init_per_seed"])
    assert abs(m["t2v_r1"] - sum(m["t2v_r1_per_seed"]) / 2) < 0.01
    assert m["chance_r1"] == pytest.approx(100 / m["eval_clips"], abs=0.01)
    assert all(0 <= m[k] <= 100 for k in ("t2v_r1", "v2t_r1", "t2v_r1_random_init"))
    run = Path(rep["run_dir"])
    for name in ("stage1", "random_init"):
        for sd in (0, 1): assert (run / f"{name}-seed{sd}" / "done.json").exists()
    # the stage-1-initialised runs really started from the students: their config names the student's run
    cfg = (run / "stage1-seed1" / "config.yaml").read_text()
    assert str(Path(rep_s1["run_dir"]) / "seed1") in cfg
    page = (t / "reports_s2" / "stage2.html").read_text()
    assert page.count("data:image/png;base64,") >= 3                   # loss curves, recall curves, retrieved frames


def test_stage2_under_the_deepspeed_launcher_gathers_across_two_processes(stage2_run):
    "VTC gathers the features of both processes (the gather itself is checked against one process in tests/test_contrastive_distributed.py)."
    from pathlib import Path
    from iv2.engine import deepspeed_launcher
    if deepspeed_launcher() is None: pytest.skip("deepspeed launcher not installed")
    t, rep_s1, _ = stage2_run
    rep = run_notebook("stage2", {"num_clips": 12, "data_dir": str(t / "world"), "stage1_dir": rep_s1["run_dir"], "steps": 2,
                                  "batch_size": 4, "seeds": "0", "eval_split": "train", "itm_k": 3, "random_init_control": False,
                                  "launcher": "deepspeed", "nprocs": 2},
                       runs_root=t / "runs_s2ds", reports_root=t / "reports_s2ds", progress=False)
    d = Path(rep["run_dir"]) / "stage1-seed0"
    env = json.loads((d / "env.json").read_text())
    assert env["world_size"] == 2 and env["global_batch"] == 4
    assert "--num_accelerators 2" in (d / "launch.log").read_text()
    # at initialisation the embeddings are nearly parallel, so VTC is about ln(number of pairs it contrasts): ln 4 when
    # each process's 2 pairs are scored against the gathered global batch of 4 (ln 2 = 0.69 without the gather)
    import math
    first = json.loads((d / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["loss_vtc"] - math.log(4)) < 0.25, first["loss_vtc"]
    assert "t2v_r1_random_init" not in rep["metrics"] and rep["scale"]["launcher"].startswith("deepspeed launcher, 2")


def test_stage2_bad_parameters_are_named(tmp_path):
    for params, name in (({"modalities": "vt,xx"}, "modalities"), ({"batch_size": 3, "launcher": "deepspeed", "nprocs": 2}, "batch_size"),
                         ({"phase": "frozen"}, "phase")):
        with pytest.raises(RunError) as e:
            run_notebook("stage2", params, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
        assert f"parameter '{name}'" in str(e.value)


@pytest.mark.parametrize("table, settings, names", [("17", "", ["vt", "vt,at", "vt,st", "vt,avt", "vt,avst"]), ("18", "V|AVS|AVS@scdet", ["V", "AVS", "AVS@scdet"])])
def test_stage2_grids_run_every_setting_and_cite_the_paper(teachers_and_stage1, table, settings, names):
    from pathlib import Path
    from iv2.data.manifest import read_manifest
    t, _, rep_s1 = teachers_and_stage1
    base = {"table": table, "num_clips": 12, "data_dir": str(t / "world"), "stage1_dir": rep_s1["run_dir"], "steps": 1, "batch_size": 4,
            "seeds": "0", "eval_split": "train", "itm_k": 3, "vidcap_s_captioner": "synthetic"}
    rep = run_notebook("ablation_stage2", {**base, "settings": settings}, runs_root=t / f"runs_t{table}", reports_root=t / f"reports_t{table}", progress=False)
    grid = rep["metrics"]["grid"]
    assert [p["setting"] for p in grid] == names
    assert all(0 <= p["t2v_r1"] <= 100 and p["eval_clips"] == grid[0]["eval_clips"] for p in grid)   # one evaluation set
    points = Path(rep["run_dir"]) / "points"
    assert len(list(points.glob("*/stage1-seed0/done.json"))) == len(names)
    if table == "17":   # the audio settings really trained the audio encoder, on the audio (+ video) pairs
        cfg = (next(points.glob("vt+avt-*")) / "stage1-seed0" / "config.yaml").read_text()
        assert "audio_trainable: true" in cfg and "avt" in cfg
        # the speech points trained the speech terms on the frozen Whisper's cached tokens
        for p, term in (("vt+st-*", "loss_stc"), ("vt+avst-*", "loss_avstc")):
            d = next(points.glob(p)) / "stage1-seed0"
            assert "speech: whisper-tiny.en" in (d / "config.yaml").read_text()
            assert json.loads((d / "metrics.jsonl").read_text().splitlines()[0])[term] > 0
        from iv2.encoders.speech import SpeechCache
        sc = SpeechCache(Path(t) / "world" / "speech" / "whisper-tiny.en-k8")   # every training clip of the world has audio
        n_train = sum(r.split == "train" for r in read_manifest(Path(t) / "world" / "manifest.jsonl"))
        assert len(sc.index["clips"]) >= n_train > 0 and sc.present_count() == len(sc.index["clips"])
    else:               # Table 18 trains on the fused captions but always evaluates on V
        s2 = json.loads((next(points.glob("AVS-*")) / "report.json").read_text())
        assert s2["scale"]["captions"] == "train vt: AVS; evaluate V"
        # the segmentation point trained on VidCap's clips and was evaluated on the world's clips, like the others
        pv = next(points.glob("AVS@scdet-*"))
        sv, params = json.loads((pv / "report.json").read_text()), json.loads((pv / "run.json").read_text())["params"]
        vc = json.loads((next(points.glob("vidcap-scdet-*")) / "report.json").read_text())
        assert params["train_manifest"] == vc["metrics"]["manifest"] and params["eval_manifest"].endswith("world/manifest.jsonl")
        assert sv["metrics"]["train_clips"] == sum(r.split == "train" for r in read_manifest(vc["metrics"]["manifest"]))
        # a finished vidcap run is reused once its world, detector and speech captioner are checked
        vdir = str(next(points.glob("vidcap-scdet-*")))
        with pytest.raises(RunError) as e:
            run_notebook("ablation_stage2", {**base, "settings": "AVS@learned", "vidcap_runs": f"learned={vdir}"},
                         runs_root=t / "runs_t18b", reports_root=t / "reports_t18b", progress=False)
        assert "parameter 'vidcap_runs'" in str(e.value) and "'detector': 'scdet'" in str(e.value)
        rep2 = run_notebook("ablation_stage2", {**base, "settings": "AVS@scdet", "vidcap_runs": f"scdet={vdir}"},
                            runs_root=t / "runs_t18b", reports_root=t / "reports_t18b", progress=False)
        points2 = Path(rep2["run_dir"]) / "points"
        p2 = json.loads((next(points2.glob("AVS@scdet-*")) / "run.json").read_text())["params"]
        assert p2["train_manifest"] == vc["metrics"]["manifest"] and not list(points2.glob("vidcap-*"))
    page = (t / f"reports_t{table}" / "ablation_stage2.html").read_text()
    assert f"Paper reference (InternVideo2, Table {table}; not measured here)" in page and "data:image/png;base64," in page


def test_stage2_grid_bad_settings_are_named(tmp_path):
    with pytest.raises(RunError) as e:
        run_notebook("ablation_stage2", {"table": "17", "settings": "vt|speech"}, runs_root=tmp_path / "runs",
                     reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'settings'" in str(e.value) and "speech" in str(e.value)


def test_vidcap_shots_run_scores_both_detectors(tmp_path):
    params = {"world_clips": 32, "data_dir": str(tmp_path / "world"), "net_preset": "tiny", "steps": 10, "batch_size": 4}
    rep = run_notebook("vidcap_shots", params, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    m = rep["metrics"]
    for k in ("f1_scenedetect", "f1_learned", "f1_scenedetect_gradual", "f1_learned_gradual"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["heldout_clips"] >= 1 and m["train_clips"] >= 20 and m["train_transitions"] >= 1
    from iv2.data.manifest import read_manifest
    world = read_manifest(tmp_path / "world" / "manifest.jsonl")
    held = [t for r in world if r.split == "test" for t in (r.transitions or [])]
    assert m["heldout_transitions"] == len(held) and m["heldout_gradual"] == sum(t["kind"] != "cut" for t in held)
    assert m["train_transitions"] == sum(len(r.transitions or []) for r in world if r.split == "train")
    assert m["learned_threshold"] == 0.5 and m["scdet_threshold_default"] == 10.0
    assert m["scdet_threshold_tuned"] in (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
    assert (tmp_path / "reports" / "vidcap_shots.html").exists()
    assert "Paper reference (InternVideo2, Table 18" in (tmp_path / "reports" / "vidcap_shots.html").read_text()
    run = rep["run_dir"]
    import torch
    from iv2.vidcap.shots import ShotNet, ShotNetConfig
    ShotNet(ShotNetConfig.preset("tiny")).load_state_dict(torch.load(f"{run}/shotnet.pt", weights_only=True))
    # the vidcap run notebook cuts the same world with this detector (no speech captioner: quick)
    rep_v = run_notebook("vidcap", {"world_clips": 32, "data_dir": str(tmp_path / "world"), "shots_dir": run, "s_captioner": "none",
                                    "num_workers": 1}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert rep_v["scale"]["detector"].startswith("learned") and rep_v["metrics"]["videos"] == 32
    assert all(rep_v["metrics"][k] == m[k] for k in ("f1_scenedetect", "f1_learned", "f1_scenedetect_gradual", "f1_learned_gradual"))
    assert rep_v["metrics"]["shots"] == sum(rep_v["metrics"][f"shots_{d}"] for d in ("keep", "too_short", "still", "extreme_motion"))


def test_vidcap_shots_bad_parameters_are_named(tmp_path):
    with pytest.raises(RunError) as e:
        run_notebook("vidcap_shots", {"eval_split": "train"}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert "parameter 'eval_split': expected one of ['val', 'test'], got 'train'" in str(e.value)


@pytest.fixture(scope="module")
def vidcap_run(teachers_and_stage1):
    "VidCap (ffmpeg's detector, Whisper for speech) over the fixture's 12-clip world."
    t, _, _ = teachers_and_stage1
    rep = run_notebook("vidcap", {"world_clips": 12, "data_dir": str(t / "world"), "detector": "scdet", "num_workers": 2},
                       runs_root=t / "runs_vc", reports_root=t / "reports_vc", progress=False)
    return t, rep


def test_vidcap_run_writes_a_manifest_with_labelled_captions(vidcap_run):
    from pathlib import Path
    from iv2.data.manifest import read_manifest
    t, rep = vidcap_run
    m = rep["metrics"]
    assert m["videos"] == 12 and m["videos_error"] == 0 and m["shots"] >= 12
    assert m["shots_keep"] == m["clips_final"] >= 4 and m["caption_errors"] == 0
    recs = read_manifest(m["manifest"])
    assert len(recs) == m["clips_final"]
    for r in recs:
        assert {"V", "A", "AV", "AVS"} <= set(r.captions), r.captions
        assert r.meta["captions"]["V"] == {"backend": "synthetic-world-script", "source": "ground_truth"}
        assert r.meta["captions"]["S"]["source"] == "model" and r.meta["captions"]["AVS"]["source"] == "ground_truth"
        assert r.path(Path(m["manifest"]).parent).exists() and r.end - r.start > 2.0
    assert m["wer_librivox"] < 0.3 and m["speech_detect_recall"] >= 0.5      # espeak-ng speech is found by the VAD
    card = (Path(rep["run_dir"]) / "data_card.md").read_text()
    assert "**Ground truth, not model output:** the A, AV, AVS, V captions" in card and "faster-whisper:tiny.en+silero-vad (model)" in card
    assert "ground truth (not a model)" in (t / "reports_vc" / "vidcap.html").read_text()


def test_stage2_trains_on_the_vidcap_manifest_which_it_can_then_filter(teachers_and_stage1, vidcap_run):
    from pathlib import Path
    from iv2.data.manifest import read_manifest
    t, _, rep_s1 = teachers_and_stage1
    _, rep_vc = vidcap_run
    man = rep_vc["metrics"]["manifest"]
    rep = run_notebook("stage2", {"train_manifest": man, "stage1_dir": rep_s1["run_dir"], "steps": 2, "batch_size": 4, "seeds": "0",
                                  "random_init_control": False, "eval_split": "train", "itm_k": 3},
                       runs_root=t / "runs_s2vc", reports_root=t / "reports_s2vc", progress=False)
    n_train = sum(r.split == "train" for r in read_manifest(man))
    assert rep["metrics"]["train_clips"] == n_train and rep["metrics"]["eval_clips"] == n_train
    assert rep["scale"]["data"].startswith(f"manifest {man}")
    # the same stage-2 model writes the V captions (retrieval) and then filters the clips by them
    s2 = rep["run_dir"] + "/stage1-seed0"
    rep_f = run_notebook("vidcap", {"world_clips": 12, "data_dir": str(t / "world"), "detector": "scdet", "num_workers": 1,
                                    "v_captioner": f"retrieval:{s2}", "s_captioner": "none", "filter_fraction": 0.5, "stage2_dir": s2},
                         runs_root=t / "runs_vc", reports_root=t / "reports_vcf", progress=False)
    m = rep_f["metrics"]
    kept, before = m["clips_final"], m["shots_keep"]
    assert (before + 1) // 2 <= kept < before
    assert "wer_librivox" not in m and "speech_detect_recall" not in m      # no model for S: not measured
    assert m["caption_sources"]["V"].endswith("(model)") and m["caption_sources"]["V"].startswith("stage2-retrieval:")
    # graded against the ground truth, beside chance; the filter's scorer and the kept/dropped split are measured
    for k in ("v_word_f1", "v_chance_word_f1", "v_label_acc", "v_chance_label_acc", "filter_auc", "filter_kept_label_acc", "filter_dropped_label_acc"):
        assert 0.0 <= m[k] <= 1.0, (k, m)
    assert "a_word_f1" not in m                                               # A captions are the ground truth: not graded
    recs = read_manifest(m["manifest"])
    assert len(recs) == kept and all(r.meta["captions"]["V"]["source"] == "model" for r in recs)
    card = (Path(rep_f["run_dir"]) / "data_card.md").read_text()
    assert "own-caption AUC of the scorer" in card and "graded against the world's ground truth" in card


def test_vidcap_bad_parameters_are_named(tmp_path):
    with pytest.raises(RunError) as e:
        run_notebook("vidcap", {"v_captioner": "whisper", "detector": "scdet"}, runs_root=tmp_path / "runs",
                     reports_root=tmp_path / "reports", progress=False)
    assert "captioner parameters" in str(e.value) and "V='whisper'" in str(e.value)


def test_eval_action_scores_every_method_single_and_multi_view(stage2_run):
    "Action recognition (Sec. 5.1.1) on the fixture's stage-2 encoder: linear, attentive, zero-shot and fine-tuning, 1 and 2 x 3 views."
    import yaml
    from pathlib import Path
    from iv2.data.manifest import read_manifest
    t, _, rep2 = stage2_run
    rep = run_notebook("eval_action", {"encoder_dir": rep2["run_dir"], "num_clips": 12, "data_dir": str(t / "world"), "test_clips": 2,
                                       "test_crops": 3, "probe_epochs": 2, "ft_steps": 2, "ft_batch": 2, "batch_size": 4},
                       runs_root=t / "runs_ea", reports_root=t / "reports_ea", progress=False)
    m, recs = rep["metrics"], read_manifest(t / "world" / "manifest.jsonl")
    n_test = sum(r.split in ("val", "test") for r in recs)
    assert (m["test_clips"], m["train_clips"], m["num_classes"], m["views"]) == (n_test, sum(r.split == "train" for r in recs), 21, 6)
    for meth in ("linear", "attentive", "zeroshot", "finetune"):
        for view in ("", "_multiview"):
            top1, top5 = m[f"{meth}_top1{view}"], m[f"{meth}_top5{view}"]
            assert 0.0 <= top1 <= top5 <= 1.0, (meth, view, m)
            cm = rep["confusion"][meth + view]                                  # rows = true class, one count per held-out clip
            assert len(cm) == 21 and all(len(row) == 21 for row in cm) and sum(map(sum, cm)) == n_test
            assert sum(cm[i][i] for i in range(21)) / n_test == pytest.approx(top1, abs=1e-4)
            labels = sorted(r.labels["action_id"] for r in recs if r.split in ("val", "test"))
            assert sorted(i for i, row in enumerate(cm) for _ in range(sum(row))) == labels
    run = Path(rep["run_dir"])
    ft_cfg = yaml.safe_load((run / "finetune-seed0" / "config.yaml").read_text())       # fine-tuned on the engine, from the encoder
    assert ft_cfg["stage_args"]["encoder"] == str(Path(rep2["run_dir"]).resolve() / "stage1-seed0") and ft_cfg["total_steps"] == 2
    assert (run / "finetune-seed0" / "done.json").exists() and ft_cfg["stage_args"]["num_classes"] == 21
    page = (t / "reports_ea" / "eval_action.html").read_text()
    assert page.count("data:image/png;base64,") >= 4                   # views, fine-tuning curves, methods' bars, confusion
    for n in (2, 3, 4, 5, 6): assert f"Paper reference (InternVideo2, Table {n}; not measured here)" in page


def test_eval_action_bad_parameters_are_named(teachers_and_stage1, tmp_path):
    _, _, rep_s1 = teachers_and_stage1
    for params, name in (({"methods": "linear,knn"}, "methods"), ({"encoder_dir": str(tmp_path)}, "encoder_dir"),
                         ({"encoder_dir": rep_s1["run_dir"], "methods": "linear,zeroshot"}, "methods")):   # zero-shot needs stage 2
        with pytest.raises(RunError) as e:
            run_notebook("eval_action", params, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
        assert f"parameter '{name}'" in str(e.value), e.value
    assert "needs a stage-2 encoder" in str(e.value)


def test_every_run_notebook_parameter_parses_under_papermill():
    "papermill reads each parameter's name, default and help from its line; a line it cannot parse drops out of `papermill --help-notebook` and warns 'unknown parameter' on every run"
    from pathlib import Path
    from papermill.translators import PythonTranslator
    names = sorted(Path(__file__).parents[1].glob("nbs/runs/*.ipynb"))
    assert len(names) >= 10
    for nb in names:
        cells = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(cells) == 1, nb.name
        src = "".join(cells[0]["source"])
        declared = [m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)\s*=", src, re.M)]
        parsed = [p.name for p in PythonTranslator.inspect({"source": src})]
        assert declared and parsed == declared, (nb.name, sorted(set(declared) - set(parsed)))


def test_features_run_takes_the_newest_stage2_encoder(stage2_run, tmp_path, monkeypatch):
    """`encoder_dir=stage2`, as `make reproduce` passes it: the newest finished stage-2 run's stage1-seed0 student, looked
    up in the project's runs/ (here a temporary project, IV2_ROOT, whose runs/ holds the fixture's stage-2 run)."""
    from pathlib import Path
    from iv2.config import project_root
    t, _, rep2 = stage2_run
    nb = project_root() / "nbs" / "runs" / "features.ipynb"
    params = {"encoder_dir": "stage2", "manifest": str(t / "world" / "manifest.jsonl"), "layer": -2, "sweep": False, "threads": 1}
    monkeypatch.setenv("IV2_ROOT", str(tmp_path))
    with pytest.raises(RunError) as e:                                              # an empty project: named
        run_notebook(nb, params, runs_root=tmp_path / "runs_x", reports_root=tmp_path / "reports_x", progress=False)
    assert "no finished 'stage2' run with ['report.json', 'stage1-seed0/config.yaml']" in str(e.value)
    (tmp_path / "runs").symlink_to(t / "runs_s2")
    rep = run_notebook(nb, params, runs_root=tmp_path / "runs_f", reports_root=tmp_path / "reports_f", progress=False)
    out = (Path(rep["run_dir"]) / "features.ipynb").read_text()
    assert f"encoder: {tmp_path / 'runs' / Path(rep2['run_dir']).name / 'stage1-seed0'}" in out
    assert rep["metrics"]["videos_with_features"] == 12

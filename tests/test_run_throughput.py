"""The throughput run notebook (nbs/runs/throughput.ipynb) end to end through papermill, on a tiny world this test
makes itself: per-preset step metrics consistent with each other and with notebook 15's FLOP count, the loader's
decode throughput beside the step rate, the step through DeepSpeed with a ZeRO stage, GPU numbers "not measured"
without CUDA or GPU result files, and bad parameters named."""
import json
import pytest
import torch
from iv2.reports import RunError, run_notebook

PARAMS = {"presets": "tiny,small", "num_frames": 2, "img_size": 56, "micro_batch": 2, "steps": 2, "warmup": 1,
          "loader_workers": "1,2", "loader_batches": 2, "inference_repeats": 2, "threads": 1,
          "zero_stages": "1", "gpu_results": ""}         # ZeRO-1 through DeepSpeed (one rank); no GPU files: GPU numbers "not measured"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from iv2.data.synth import SynthConfig, generate_world
    t = tmp_path_factory.mktemp("throughput")
    cfg = SynthConfig(num_clips=6, width=64, height=64, fps=10, min_duration=2.0, max_duration=2.5, min_shot_frames=10,
                      speech_share=0.0, seed=0)
    return t, generate_world(cfg, t / "world", num_workers=1, progress=False)


@pytest.fixture(scope="module")
def run(world):
    t, man = world
    rep = run_notebook("throughput", {**PARAMS, "manifest": str(man)}, runs_root=t / "runs", reports_root=t / "reports", progress=False)
    return t, man, rep


def test_step_metrics_consistent(run):
    from iv2.bench import vit_step_flops, visible_per_frame
    from iv2.encoders.vit import VisionConfig
    t, man, rep = run
    assert json.loads((t / "reports" / "throughput.json").read_text()) == rep
    m, B = rep["metrics"], PARAMS["micro_batch"]
    for p in ("tiny", "small"):
        cfg = VisionConfig.preset(p, num_frames=2, img_size=56)
        K = visible_per_frame(cfg, 0.8)                                 # default mask_ratio 0.8: the stage-1 student
        assert m[f"{p}_tokens_per_clip"] == 1 + cfg.t_tokens * K
        assert m[f"{p}_flops_per_step"] == vit_step_flops(cfg, B, K)
        assert m[f"{p}_clips_per_s"] == pytest.approx(B / m[f"{p}_step_s"], rel=1e-4)
        assert m[f"{p}_tokens_per_s"] == pytest.approx(m[f"{p}_clips_per_s"] * m[f"{p}_tokens_per_clip"], rel=1e-4)
        assert m[f"{p}_tflops"] == pytest.approx(m[f"{p}_flops_per_step"] / m[f"{p}_step_s"] / 1e12, rel=1e-3)
        per = rep["per_step"][p]
        assert len(per) == PARAMS["steps"]
        for s in per:
            assert s["tokens_per_s"] == pytest.approx(s["clips_per_s"] * m[f"{p}_tokens_per_clip"])
            assert s["tflops"] == pytest.approx(m[f"{p}_flops_per_step"] / s["step_s"] / 1e12)
        if not torch.cuda.is_available(): assert m[f"{p}_mfu"] == "not measured (no GPU peak)"
    assert m["small_flops_per_step"] > m["tiny_flops_per_step"]
    sc = rep["scale"]
    assert (sc["zero_stages"], sc["attn_backend"], sc["precision"], sc["presets"]) == ([1], "sdpa", "fp32", ["tiny", "small"])
    assert m["tiny_zero1_step_s"] > 0 and sc["gpu_results"] == "none"
    assert rep["command"].startswith("iv2 run throughput -p presets tiny,small")
    page = (t / "reports" / "throughput.html").read_text()
    assert page.count("data:image/png;base64,") >= 3                   # step bars, loader vs step, inference speed-up


def test_loader_beside_step(run):
    t, man, rep = run
    m = rep["metrics"]
    for w in (1, 2):
        assert m[f"loader_clips_per_s_w{w}"] > 0
        assert m[f"loader_clips_per_s_per_worker_w{w}"] == pytest.approx(m[f"loader_clips_per_s_w{w}"] / w, rel=1e-4)
        assert rep["loader"][str(w)]["batches"] == PARAMS["loader_batches"]
    best = max(m["loader_clips_per_s_w1"], m["loader_clips_per_s_w2"])
    for p in ("tiny", "small"):
        assert m[f"loader_over_step_{p}"] == pytest.approx(best / m[f"{p}_clips_per_s"], rel=1e-3)
        assert m[f"loader_keeps_up_{p}"] == (best >= m[f"{p}_clips_per_s"])
        assert m[f"loader_workers_needed_{p}"] >= 1


def test_inference_and_gpu(run):
    t, man, rep = run
    m = rep["metrics"]
    assert m["inference_speedup_fp32_math"] == 1.0
    assert m["inference_speedup_fp32_sdpa"] > 0 and m["inference_speedup_bf16_sdpa"] > 0 and m["inference_speedup_bf16_sdpa_flash"] > 0
    if torch.cuda.is_available(): pytest.skip("the GPU section ran")
    assert m["inference_speedup_bf16_flash"].startswith("not measured")
    for k in ("gpu", "gpu_bf16_clips_per_s_sdpa", "gpu_bf16_clips_per_s_flash", "gpu_mfu_sdpa", "gpu_mfu_flash", "gpu_flash_over_sdpa",
              "gpu_mfu_best", "gpu_mfu_goal_45", "gpu_inference_speedup_bf16_sdpa", "gpu_inference_speedup_bf16_flash"):
        assert m[k] == "not measured", k


@pytest.mark.parametrize("bad, name", [({"presets": "tiny,huge"}, "presets"), ({"zero_stages": "1,5"}, "zero_stages"),
                                       ({"world_preset": "huge"}, "world_preset")])
def test_bad_parameters_named(world, bad, name):
    t, man = world
    with pytest.raises(RunError, match=f"ParameterError.*{name}"):
        run_notebook("throughput", {**PARAMS, "manifest": str(man), **bad}, runs_root=t / "bad", reports_root=t / "bad_reports", progress=False)

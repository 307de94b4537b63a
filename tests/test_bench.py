"""The benchmark (nbs/15_bench.ipynb, nbs/runs/bench_vit.ipynb): its timm side runs in .venv-bench (`make bench-venv`),
because timm needs torchvision, which does not import beside .venv's CPU torch 2.13.0. Tests that need timm run a
script in that venv and are skipped, with the reason, when it does not exist."""
import json, os, subprocess, textwrap
from pathlib import Path
import pytest
from iv2.reports import RunError, run_notebook

ROOT = Path(__file__).resolve().parents[1]
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
needs_bench_venv = pytest.mark.skipif(not BENCH_PY.exists(), reason=f"{BENCH_PY} does not exist: the timm side of the "
                                      "benchmark needs the separate venv made by `make bench-venv`")


def _bench(script: str) -> dict:
    "Run `script` in .venv-bench with this checkout's iv2; it prints one JSON line last."
    r = subprocess.run([str(BENCH_PY), "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bench_side(tmp_path_factory):
    "One process in .venv-bench (timm's import is the slow part) runs the timm-side checks below."
    p = tmp_path_factory.mktemp("bench") / "b.json"
    out = _bench(f"""
        import json, torch
        from iv2.bench import (bench_config, timm_twin, tile_frames, expected_param_gap, tokens_per_clip, copy_to_twin,
                               tiled_to_frame_order, main)
        from iv2.encoders.vit import VisionTransformer
        res = {{}}
        for frames, size in ((4, 56), (2, 42)):
            cfg = bench_config("tiny", frames, size)
            m, tw = VisionTransformer(cfg), timm_twin(cfg)
            v = torch.randn(2, 3, frames, size, size)
            with torch.no_grad():
                a, b = m(v, pool=False)["tokens"], tw.forward_features(tile_frames(v))
            n = lambda mod: sum(p.numel() for p in mod.parameters())
            res[f"{{frames}}x{{size}}"] = dict(iv2=list(a.shape), timm=list(b.shape), tokens=tokens_per_clip(cfg),
                iv2_params=n(m) - n(m.clip_projector), timm_params=n(tw), gap=expected_param_gap(cfg),
                q_norm=list(tw.blocks[0].attn.q_norm.weight.shape), norm=type(tw.blocks[0].norm1).__name__,
                ls=float(tw.blocks[0].ls1.gamma[0]), final=type(tw.norm).__name__, head=type(tw.head).__name__,
                qkv_bias=tw.blocks[0].attn.qkv.bias is None)
        # the same function: iv2's weights copied in (qk-norm off: the one documented difference)
        torch.manual_seed(0)
        cfg = bench_config("tiny", 4, 56).override(qk_norm=False, layerscale_init=1.0)
        m = VisionTransformer(cfg).train(); tw = copy_to_twin(m, timm_twin(cfg).train())
        v = torch.randn(2, 3, 4, 56, 56)
        a = m(v, pool=False)["tokens"]; b = tiled_to_frame_order(tw.forward_features(tile_frames(v)), cfg)
        a.square().mean().backward(); b.square().mean().backward()
        g = (m.blocks[1].mlp.fc1.weight.grad - tw.blocks[1].mlp.fc1.weight.grad).abs().max().item()
        # with qk-norm on, the weights cannot be copied (whole width vs per head): a clear error
        try: copy_to_twin(VisionTransformer(bench_config("tiny", 4, 56)), timm_twin(bench_config("tiny", 4, 56))); err = ""
        except ValueError as e: err = str(e)
        same = dict(out=(a - b).abs().max().item(), scale=a.abs().max().item(), grad=g, err=err)
        # the command line the run notebook calls
        main(["--preset", "tiny", "--num-frames", "4", "--img-size", "56", "--batch", "2", "--repeats", "3",
              "--warmup", "1", "--threads", "1", "--out", {str(p)!r}])
        print(json.dumps(dict(twins=res, same=same)))
    """)
    return out, json.loads(p.read_text())


@needs_bench_venv
def test_timm_twin_has_the_same_tokens_shapes_and_parameters(bench_side):
    for key, r in bench_side[0]["twins"].items():
        frames, size = map(int, key.split("x"))
        assert r["iv2"] == r["timm"] == [2, 1 + frames * (size // 14) ** 2, 64], r
        assert r["tokens"] == r["iv2"][1]
        assert r["iv2_params"] - r["timm_params"] == r["gap"] == 4 * 2 * (64 - 16)      # qk-norm: width 64 vs head 16
        assert r["q_norm"] == [16] and r["norm"] == "RmsNorm" and r["ls"] == pytest.approx(1e-5)
        assert r["final"] == "Identity" and r["head"] == "Identity" and r["qkv_bias"]


@needs_bench_venv
def test_timm_twin_computes_the_same_function(bench_side):
    "With iv2's weights copied in (qk-norm off), the twin gives iv2's tokens and gradients."
    out = bench_side[0]["same"]
    assert out["scale"] > 0.5 and out["out"] < 1e-5 and out["grad"] < 1e-6, out
    assert "per head" in out["err"]


@needs_bench_venv
def test_benchmark_cli_writes_its_json(bench_side):
    r = bench_side[1]
    assert r["order"] == ["iv2", "timm", "iv2_masked"] * 3
    assert all(len(r["times"][k]) == 3 and min(r["times"][k]) > 0 for k in ("iv2", "timm", "iv2_masked"))
    assert r["tokens"]["iv2"] == r["tokens"]["timm"] == 65 and r["tokens"]["iv2_masked"] == 1 + 4 * 4
    assert r["clips_per_s"]["iv2"] == pytest.approx(2 / r["summary"]["iv2"]["median_s"])
    assert r["env"]["timm"] and r["env"]["torch"].startswith("2.14") and r["gpu"] == "not measured"
    assert r["env"]["iv2_file"].startswith(str(ROOT))


@needs_bench_venv
def test_bench_vit_run_notebook_end_to_end(tmp_path):
    params = {"preset": "tiny", "num_frames": 4, "img_size": 56, "batch": 2, "repeats": 2, "warmup": 0, "threads": 1}
    rep = run_notebook("bench_vit", params, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    m = rep["metrics"]
    for k in ("iv2_clips_per_s", "timm_clips_per_s", "iv2_over_timm", "masked80_over_unmasked"):
        assert isinstance(m[k], float) and m[k] > 0, k
    assert m["iv2_over_timm"] == pytest.approx(m["iv2_clips_per_s"] / m["timm_clips_per_s"], rel=1e-3)
    assert m["gpu"] == "not measured"                                   # CI has no CUDA device
    assert m["gpu_mfu_sdpa"] == m["gpu_mfu_flash"] == m["gpu_flash_over_sdpa"] == "not measured"
    assert rep["scale"]["preset"] == "tiny" and rep["scale"]["tokens"] == 65 and rep["scale"]["torch_main_venv"].startswith("2.13")
    page = (tmp_path / "reports" / "bench_vit.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "not measured" in page


@pytest.mark.parametrize("params, message", [
    ({"img_size": 100}, "parameter 'img_size': must be a multiple of the patch size 14, got 100"),
    ({"bench_python": "/nonexistent/bin/python"}, "make bench-venv"),
])
def test_bench_vit_bad_parameters_are_named(tmp_path, params, message):
    with pytest.raises(RunError) as e:
        run_notebook("bench_vit", params, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert message in str(e.value)
    assert not (tmp_path / "reports" / "bench_vit.html").exists()

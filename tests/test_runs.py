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

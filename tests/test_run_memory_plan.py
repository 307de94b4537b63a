"""The memory_plan run notebook (nbs/runs/memory_plan.ipynb) end to end through papermill on a small grid: its metrics
agree with `iv2.memory`, its table lands in the run directory, and a bad parameter is named."""
import csv, json
from pathlib import Path
import pytest
from iv2.reports import RunError, run_notebook
from iv2.memory import memory_breakdown, max_micro_batch

SMALL = {"presets": "1B,6B", "stages": "1,3", "zero_stages": "1,3", "micro_batches": "1,16"}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    t = tmp_path_factory.mktemp("memory_plan")
    return t, run_notebook("memory_plan", SMALL, runs_root=t / "runs", reports_root=t / "reports", progress=False)


def test_metrics_and_table(plan):
    t, rep = plan
    assert json.loads((t / "reports" / "memory_plan.json").read_text()) == rep
    m = rep["metrics"]
    assert m["estimates_not_measurements"] is True and m["configurations"] == 2 * 2 * 2 * 2
    assert m["deepspeed_checked_rows"] == 2 * 2 * 1 * 2                       # the ZeRO-3 rows carry DeepSpeed's estimate
    ref = memory_breakdown("6B", 1, 1, 1)                                      # paper: ZeRO-1, checkpointing, 256 GPUs
    assert m["stage1_6B_zero"] == 1 and m["stage1_6B_fits_80gib"] is True
    assert m["stage1_6B_total_gib_mb1"] == round(ref["total_gib"], 2) < 80
    assert m["stage1_6B_max_micro_batch"] == max_micro_batch("6B", 1, 1) >= 1
    assert m["stage1_6B_max_micro_batch_by_zero"]["0"] == 0                    # plain DDP does not fit the 6B student
    assert m["stage1_6B_max_micro_batch_by_zero"]["3"] >= m["stage1_6B_max_micro_batch_by_zero"]["1"]
    assert set(m["max_micro_batch"]) == {f"{p}/stage{s}/zero{z}" for p in ("1B", "6B") for s in (1, 3) for z in (1, 3)}
    rows = list(csv.DictReader(open(Path(rep["run_dir"]) / "memory_plan.csv")))
    assert len(rows) == 16 and {r["zero_stage"] for r in rows} == {"1", "3"}
    r = next(r for r in rows if (r["preset"], r["stage"], r["zero_stage"], r["micro_batch"]) == ("6B", "1", "1", "16"))
    assert float(r["total_gib"]) == pytest.approx(memory_breakdown("6B", 1, 1, 16)["total_gib"])
    page = (t / "reports" / "memory_plan.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "not measurements" in page
    assert rep["command"].startswith("iv2 run memory_plan -p presets 1B,6B")


@pytest.mark.parametrize("params, message", [
    ({"presets": "1B,7B"}, "parameter 'presets': '7B' is not one of"),
    ({"offload": "disk"}, "parameter 'offload': expected one of ['none', 'optimizer', 'optimizer+params'], got 'disk'"),
])
def test_bad_parameters_are_named(tmp_path, params, message):
    with pytest.raises(RunError) as e:
        run_notebook("memory_plan", {**SMALL, **params}, runs_root=tmp_path / "runs", reports_root=tmp_path / "reports", progress=False)
    assert message in str(e.value)
    assert not (tmp_path / "reports" / "memory_plan.html").exists()

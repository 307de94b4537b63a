"""Integration checks of the project set-up (the notebooks hold the unit tests)."""
import configparser, json, re, shutil, subprocess, sys
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _settings():
    c = configparser.ConfigParser(delimiters=["="]); c.read(ROOT / "settings.ini")
    return c["DEFAULT"]


def test_environment_yml_carries_the_settings_pins():
    s = _settings()
    pins = set((s["requirements"] + " " + s["dev_requirements"]).split())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == pins
    assert all("==" in p for p in pins), "every dependency is pinned"
    assert "torch==2.13.0" in pins
    assert not any(p.startswith("flash") for p in pins), "GPU-only packages stay in the gpu extra"


def test_parameters_tag_survives_nbdev_clean(tmp_path):
    for name in ("settings.ini",): shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "nbs" / "runs", tmp_path / "nbs" / "runs")
    (tmp_path / "nbs" / "00_dummy.ipynb").write_text((ROOT / "nbs" / "00_config.ipynb").read_text())
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "nbdev_clean")], cwd=tmp_path, check=True, capture_output=True)
    runs = sorted((tmp_path / "nbs" / "runs").glob("*.ipynb"))
    assert runs, "there are run notebooks"
    for nb in runs:
        cells = json.loads(nb.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name}: exactly one 'parameters' cell after nbdev_clean"


def test_every_run_notebook_validates_its_parameters():
    for nb in sorted((ROOT / "nbs" / "runs").glob("*.ipynb")):
        src = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        assert "check_params(" in src, f"{nb.name} does not validate its papermill parameters"

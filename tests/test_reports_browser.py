"""The committed reports as a reviewer sees them: headless Chromium opens `reports/index.html`, every report it links to
renders, and screenshots show each report's embedded plots (not blank, no broken images).

Chromium is a system package (`make system-deps` installs Debian's `chromium`); it runs with --headless --no-sandbox and
background networking disabled. Each report is copied to a temporary folder with a small script appended that, once the
page has loaded, lays its first plots out in a fixed grid of 400x300 cells; the screenshot is then checked cell by cell.
A broken image (undecodable data) leaves its cell white, so the check fails on it: `test_the_checker_catches_a_broken_image`
shows that on a page made for the purpose.
"""
import base64, io, re, shutil, subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iv2.config import project_root

ROOT = project_root()
REPORTS = ROOT / "reports"
CELL_W, CELL_H, COLS, MAX_PLOTS = 400, 300, 3, 6
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=5000"]

GRID_SCRIPT = f"""
<script>
window.addEventListener('load', () => {{
  const imgs = Array.from(document.images).slice(0, {MAX_PLOTS});
  const grid = document.createElement('div');
  grid.style.cssText = 'display:grid;grid-template-columns:repeat({COLS},{CELL_W}px);grid-auto-rows:{CELL_H}px;gap:0;margin:0;padding:0;background:#fff';
  for (const im of imgs) {{
    const c = im.cloneNode(); c.removeAttribute('width'); c.removeAttribute('height'); c.removeAttribute('alt');
    c.style.cssText = 'width:{CELL_W}px;height:{CELL_H}px;object-fit:contain;display:block;margin:0;border:0';
    grid.appendChild(c);
  }}
  document.body.innerHTML = ''; document.body.style.cssText = 'margin:0;padding:0;background:#fff';
  document.body.appendChild(grid);
}});
</script>
"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None: pytest.fail("chromium is not installed: run `make system-deps` (Debian package `chromium`)")
    return exe


def screenshot(page: Path, out: Path, width: int, height: int) -> np.ndarray:
    "Screenshot `page` in headless Chromium at width x height; the pixels as an (H, W, 3) uint8 array."
    r = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and out.exists(), f"chromium could not screenshot {page}: {r.stderr[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def ink(px: np.ndarray) -> float:
    "Fraction of pixels that are not (near-)white."
    return float((px.min(axis=-1) < 225).mean())


def n_embedded_images(page: str) -> int:
    return len(re.findall(r"<img[^>]+src=[\"']data:image/", page))


def plot_cells(page: Path, tmp: Path) -> list[np.ndarray]:
    "The screenshot cells of the first plots of `page` (an HTML file), laid out by GRID_SCRIPT."
    probe = tmp / f"probe-{page.name}"
    probe.write_text(page.read_text() + GRID_SCRIPT)
    n = min(MAX_PLOTS, n_embedded_images(page.read_text()))
    rows = max(1, -(-n // COLS))
    px = screenshot(probe, tmp / f"{page.stem}.png", CELL_W * COLS, CELL_H * rows)
    return [px[(i // COLS) * CELL_H:(i // COLS + 1) * CELL_H, (i % COLS) * CELL_W:(i % COLS + 1) * CELL_W] for i in range(n)]


def cell_renders(cell: np.ndarray) -> bool:
    """A rendered plot: at least 1% of its cell's interior inked, with more than a handful of colours. Chromium draws a
    broken image as a 1-px grey frame with a 16-px icon: the interior (3 px in from the edges) of such a cell is ~0.2% inked."""
    cell = cell[3:-3, 3:-3]
    colours = len(np.unique((cell // 32).reshape(-1, 3), axis=0))
    return ink(cell) > 0.01 and colours > 4


def index_links() -> list[str]:
    return re.findall(r"<a href='([^']+)'>", (REPORTS / "index.html").read_text())


def test_the_index_lists_every_run_notebooks_report():
    linked = {Path(h).stem for h in index_links()}
    notebooks = sorted(p.stem for p in (ROOT / "nbs" / "runs").glob("*.ipynb"))
    assert notebooks, "no run notebooks found"
    missing = [n for n in notebooks if n not in linked]
    assert not missing, f"reports/index.html has no report for the run notebooks {missing}: run `iv2 run <name>` and commit reports/"
    readme = (REPORTS / "README.md").read_text()
    assert all(f"[{n}]({n}.html)" in readme for n in notebooks), "reports/README.md lists every run notebook's report"


def test_the_index_renders_and_every_link_opens_a_report(tmp_path):
    px = screenshot(REPORTS / "index.html", tmp_path / "index.png", 1400, 900)
    assert ink(px) > 0.005, "the index page rendered blank"
    links = index_links()
    assert links
    for href in links:
        target = REPORTS / href
        assert target.is_file(), f"index.html links to {href}, which is not in reports/"
        name = Path(href).stem
        page = target.read_text()
        assert f"Report: {name}" in page, f"{href} does not start with its run card"
        assert "Rerun it with:" in page and f"iv2 run " in page, f"{href} does not print the command that reruns it"


def test_every_linked_report_shows_its_plots(tmp_path):
    failures = []
    for href in index_links():
        page = REPORTS / href
        n = n_embedded_images(page.read_text())
        if n == 0:
            failures.append(f"{href}: no embedded plot"); continue
        for i, cell in enumerate(plot_cells(page, tmp_path)):
            if not cell_renders(cell): failures.append(f"{href}: plot {i + 1} renders blank or broken (ink {ink(cell):.4f})")
    assert not failures, "\n".join(failures)


def _png(draw: bool) -> str:
    "A bar chart (draw=True) or an empty white figure, as base64 PNG."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(4, 3), dpi=80)
    if draw:
        ax = fig.add_subplot(); ax.bar(["a", "b", "c"], [1, 3, 2], color=["tab:blue", "tab:orange", "tab:green"]); ax.set_title("a plot")
    buf = io.BytesIO(); fig.savefig(buf, format="png"); plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def test_the_checker_catches_blank_and_broken_images(tmp_path):
    good, blank = _png(True), _png(False)
    raw = base64.b64decode(good)
    broken = base64.b64encode(raw[:16] + bytes(range(256)) * 8).decode()   # a PNG signature, then garbage: undecodable
    page = tmp_path / "fake.html"
    page.write_text("<html><body><h1>Report: fake</h1>" + "".join(f"<img src=\"data:image/png;base64,{b}\">" for b in (good, blank, broken))
                    + "</body></html>")
    cells = plot_cells(page, tmp_path)
    assert len(cells) == 3
    assert cell_renders(cells[0]), "a real bar chart renders"
    assert not cell_renders(cells[1]), "an empty white figure is caught"
    assert not cell_renders(cells[2]), "an undecodable image is caught"

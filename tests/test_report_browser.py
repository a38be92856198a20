"""The HTML report in a real headless Chromium, at a laptop's 1366 px: nothing runs off the
right edge, the scripts run without errors, tables sort, and the figures are drawn.

The report is that of a real sweep: a copy of the committed Indian Pines grid (16 real runs
with a zip group, two seeds and a confusion matrix per run), reported from its tables.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcdl.report import report
from hpcdl.report.figures import BLUE

ROOT = Path(__file__).resolve().parents[1]
REAL_SWEEP = ROOT / "results" / "indian_pines_grid"
WIDTH = 1366
# Injected into a copy of the report: the first part records script errors, the second writes
# what the test checks into the page once it has loaded (and sorts the best-runs table).
CATCH = """<script>window.probeErrors = [];
window.addEventListener('error', e => window.probeErrors.push(String(e.message)));
const consoleError = console.error;
console.error = (...args) => { window.probeErrors.push(args.join(' ')); consoleError(...args); };
</script>"""
PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const tables = [...document.querySelectorAll('table.dataTable')];
  const title = th => th.querySelector('.dt-column-title').textContent;
  const best = tables.find(t => title(t.querySelector('th')) === 'run');
  const firstRun = () => best.querySelector('tbody tr td span').title;
  const before = firstRun();
  const metric = [...best.querySelectorAll('th')].find(th => title(th) === 'test_accuracy');
  metric.querySelector('button.dtcc-button_order').click();
  setTimeout(() => report(tables, before, firstRun()), 500);
}, 2000));
function report(tables, before, after) {
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    datatables: tables.length,
    plots: document.querySelectorAll('.js-plotly-plot').length,
    parcoords: document.querySelectorAll('.js-plotly-plot .parcoords').length,
    first_before: before,
    first_after_sort: after,
    errors: window.probeErrors,
  });
  document.body.appendChild(out);
}
</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # software WebGL for the parallel coordinates
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
]


@pytest.fixture(scope="module")
def chromium():
    if not shutil.which("chromium"):
        if os.environ.get("HPCDL_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed")
        pytest.skip("no chromium (scripts/test.sh installs Debian's when run as root)")
    return "chromium"


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / REAL_SWEEP.name
    shutil.copytree(REAL_SWEEP, folder, ignore=shutil.ignore_patterns("report.*"))
    html_path, _md = report([folder], refresh=False, out=lambda _m: None)
    return html_path


def browse(chromium, page: Path, profile: Path, *args: str, height: int = 768):
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{height}", *args]
        + [page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def test_report_fits_a_laptop_screen_and_its_scripts_work(chromium, real_report, tmp_path):
    page = real_report.read_text()
    # self-contained: no script or style from elsewhere; each library's code embedded once
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)
    assert page.count("plotly.js v") == 1 and page.count("function injectModule") == 1
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE))
    proc = browse(
        chromium, probed, tmp_path / "profile", "--enable-logging=stderr", "--v=0", "--dump-dom"
    )
    assert "Uncaught" not in proc.stderr, proc.stderr[-3000:]
    dom = proc.stdout
    probe = json.loads(dom.split('<pre id="probe">')[1].split("</pre>")[0].replace("&quot;", '"'))
    assert probe["errors"] == []
    assert probe["innerWidth"] == WIDTH and probe["scrollWidth"] <= WIDTH, probe
    assert probe["datatables"] >= 6 and probe["plots"] == 4 and probe["parcoords"] == 1, probe
    # sorting the best-runs table by test_accuracy (ascending) brings the worst run first
    assert probe["first_before"].endswith("-04f8ecad"), probe  # the best run heads it
    assert probe["first_after_sort"].endswith("-fd2b532b"), probe  # the worst (0.766)


def colour_share(pixels: np.ndarray, hex_colour: str, tolerance: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance).sum())


def test_report_screenshot_shows_the_figures(chromium, real_report, tmp_path):
    shot = tmp_path / "report.png"
    browse(chromium, real_report, tmp_path / "profile", f"--screenshot={shot}", height=6000)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[1] == WIDTH
    assert colour_share(pixels, BLUE) > 500  # the effect plots' boxes and points
    assert colour_share(pixels, "#e4572e") > 200  # the second-best run's learning curves
    assert colour_share(pixels, "#08306b") > 2000  # the confusion matrix's darkest cells
    assert colour_share(pixels, "#fde725", tolerance=30) > 20  # the best runs' viridis lines

"""The report in a real browser: headless Chromium (Debian package `chromium`; `.ci/run`
installs it) loads the run page and the index with no console errors, and a screenshot shows
the verdict banner and every section."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import cli_run

from audit.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.fail(
            "headless Chromium is needed: `apt-get install chromium` (Debian), as .ci/run does"
        )
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory, prefect_harness):
    from audit.demo.world import write_cohort

    tmp = tmp_path_factory.mktemp("site")
    folder = write_cohort(tmp / "c", 120, seed=71)
    config = tmp / "c.toml"
    config.write_text("[accuracy]\nn_boot = 50\n[survival]\nn_boot = 20\n[fairness]\nn_boot = 50\n")
    out = tmp / "out"
    for _ in range(2):  # two runs, so the index has trends
        cli_run(folder, "predictions:faceage,risk", out, config=config)
    main(["validate", "--cohort", str(folder), "--out", str(out)])  # a validation-only run
    return out


MEASURE = """<script>
(function () {
  var width = document.documentElement.clientWidth, out = [];
  document.querySelectorAll('body *').forEach(function (e) {
    var r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= width + 1) return;
    for (var p = e.parentElement; p; p = p.parentElement) {  // inside a scrolling box: fine
      var x = getComputedStyle(p).overflowX;
      if (x === 'auto' || x === 'scroll' || x === 'hidden') return;
    }
    out.push(e.tagName + (e.id ? '#' + e.id : '') + ' ' + Math.round(r.right));
  });
  document.body.setAttribute('data-overflow', out.slice(0, 10).join(', ') || 'none');
  document.body.setAttribute('data-height', document.documentElement.scrollHeight);
})();
</script>"""


def _audit_page(site):
    """The page of the newest audit run (the site also holds a validation run)."""
    from audit.pipeline.store import Store

    runs = Store(site / "audit.duckdb").runs()
    return site / "runs" / runs[runs["flow"] == "audit"]["run_id"].iloc[-1] / "index.html"


def _layout(page, width: int, tmp_path) -> tuple[str, int]:
    """What sticks out of the page at ``width`` px (Chromium lays it out, a script measures
    every element's box, outside any box that scrolls on its own), and the page's height."""
    import re

    probe = tmp_path / f"probe-{width}-{page.parent.name}-{page.name}"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = _chromium(f"--window-size={width},900", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'data-overflow="([^"]*)" data-height="(\d+)"', dom)
    assert found, dom[-500:]
    return found.group(1), int(found.group(2))


def test_pages_load_without_console_errors(site):
    import os

    pages = [site / "index.html"] + sorted(site.glob("runs/*/*.html"))
    assert {p.name for p in pages} >= {"index.html", "model_card.html", "tripod_ai.html"}
    mask = os.umask(0)
    os.umask(mask)
    # readable as any file written here (a temporary file's 0600 made them private)
    assert {p.stat().st_mode & 0o777 for p in pages} == {0o666 & ~mask}
    for page in pages:
        res = _chromium("--dump-dom", page.as_uri())
        assert res.returncode == 0, res.stderr[-2000:]
        assert "</html>" in res.stdout and "<h1" in res.stdout
        errors = [
            line
            for line in res.stderr.splitlines()
            if "CONSOLE" in line and ("error" in line.lower() or "Uncaught" in line)
        ]
        assert not errors, errors


def test_a_screenshot_shows_the_verdict_and_every_section(site, tmp_path):
    import numpy as np
    from PIL import Image

    page = _audit_page(site)
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    for section in (
        "verdict",
        "validation",
        "composition",
        "accuracy",
        "fairness",
        "survival",
        "trail",
    ):
        assert f'id="{section}"' in dom, section
    shot = tmp_path / "page.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the verdict banner: a wide block of the pass green or the fail red near the top
    top = pixels[:700]
    red = (top[..., 0] > 150) & (top[..., 1] < 80) & (top[..., 2] < 80)
    green = (top[..., 1] > 100) & (top[..., 0] < 80) & (top[..., 2] < 100)
    assert max(red.sum(), green.sum()) > 20000, (red.sum(), green.sum())
    assert (pixels.std(axis=(0, 1)) > 10).all()  # not a blank page


def test_print_keeps_every_table_and_drops_the_navigation(site, tmp_path):
    """Printed (to PDF, as a regulator files it), the page keeps what sits in collapsed
    <details> (a reader of paper cannot click), keeps the verdict in words, and drops the
    section navigation."""
    import pypdf

    page = _audit_page(site)
    pdf = tmp_path / "page.pdf"
    res = _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    assert res.returncode == 0 and pdf.is_file(), res.stderr[-2000:]
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(pdf).pages)
    assert "PASS:" in text or "FAIL:" in text
    # a header that exists only inside a closed <details>: the calibration deciles
    assert "observed (Kaplan-Meier)" in text
    assert "Dossier" not in text  # the nav link; the section is "Regulatory dossier"
    assert "Regulatory dossier" in text


@pytest.mark.parametrize("width", [1400, 500], ids=["desktop", "phone"])
def test_no_page_is_wider_than_the_screen(site, tmp_path, width):
    """At 1400 px and at a phone's width every table, code and navigation fits the page or
    scrolls inside its own box: nothing makes the page scroll sideways. (Headless Chromium
    lays out no narrower than 500 px.)"""
    pages = [site / "index.html"] + sorted(site.glob("runs/*/*.html"))
    for page in pages:
        assert _layout(page, width, tmp_path)[0] == "none", (page.name, width)
    # what passed, every term of every Cox model and the long tables are folded: the audit
    # page of one model on 120 subjects was 26,900 px tall, 15,000 now
    if width == 1400:
        assert _layout(_audit_page(site), width, tmp_path)[1] < 16000


def test_checks_that_failed_lead_and_a_validation_page_has_no_model_sections(site):
    """Failing and inconclusive checks come first; the passing ones are folded; a page of a
    validation run (no model) shows no empty accuracy or survival section."""
    from audit.pipeline.store import Store

    runs = Store(site / "audit.duckdb").runs()
    audit_id = runs[runs["flow"] == "audit"]["run_id"].iloc[-1]
    validation_id = runs[runs["flow"] == "validate"]["run_id"].iloc[-1]
    page = (site / "runs" / audit_id / "index.html").read_text()
    verdict = page[page.index('id="verdict"') : page.index('id="validation"')]
    assert "check(s) passed" in verdict and "<details" in verdict
    opened = verdict[: verdict.index("<details")]
    assert '<span class="badge pass">' not in opened  # passing rows sit in the fold
    only = (site / "runs" / validation_id / "index.html").read_text()
    for section in ("accuracy", "survival"):
        assert f'id="{section}"' not in only and f'href="#{section}"' not in only
    assert 'id="validation"' in only and 'id="composition"' in only


def test_a_combined_audit_page_loads_and_fits_the_screen(site, tmp_path, monkeypatch):
    """The combined audit of the site's two audit runs, sent as two sites' bundles: its page
    loads with no console error, shows every section, and nothing sticks out at 1400 px or
    at a phone's width."""
    import audit
    from audit.pipeline.bundle import write_bundle
    from audit.pipeline.store import Store

    store = Store(site / "audit.duckdb")
    runs = store.runs()
    bundles = []
    for label, run_id in zip(("north", "south"), runs[runs["flow"] == "audit"]["run_id"]):
        monkeypatch.setenv("FACEAGE_AUDIT_SIGNING_KEY", str(tmp_path / f"{label}.key"))
        bundles.append(write_bundle(store, run_id, label, tmp_path / f"{label}.json"))
    combined = audit.combine(bundles, out=tmp_path / "combined")
    page = combined.report_path
    res = _chromium("--dump-dom", page.as_uri())
    assert res.returncode == 0 and "</html>" in res.stdout
    errors = [line for line in res.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not errors, errors
    for section in ("verdict", "sites", "models", "judged", "pooled", "differences", "trail"):
        assert f'id="{section}"' in res.stdout, section
    assert "Combined audit of 2 sites (north, south)" in res.stdout
    for width in (1400, 500):
        assert _layout(page, width, tmp_path)[0] == "none", width

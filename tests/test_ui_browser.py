"""vfs ui in a real browser: headless Chromium driven by Selenium over a real uvicorn.

One generated repository (tests/ui_helpers.py) and one browser for the module. The
tests click through history → commit → file preview → diff and runs → compare →
lineage, load every page, and after each page check that the browser console logged
no error. Screenshots go to test-artifacts/ui/ (printed; set VFS_UI_SCREENSHOTS to
write them elsewhere, e.g. docs/img to refresh the docs' pictures). Waits are
explicit (WebDriverWait on a condition), never sleeps.
"""

from __future__ import annotations

import os
import shutil

import pytest

from ui_helpers import make_demo, serve

selenium = pytest.importorskip("selenium", reason="pip install selenium (test extras)")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException, WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = os.environ.get("VFS_UI_SCREENSHOTS") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts", "ui")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(str(tmp_path_factory.mktemp("ui") / "repo"))


@pytest.fixture(scope="module")
def site(demo):
    with serve(demo.root, hosts=("127.0.0.1",)) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMEDRIVER):
        if IN_CI:
            pytest.fail("chromedriver is missing: scripts/setup.sh installs chromium-driver")
        pytest.skip("chromedriver is missing (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    os.makedirs(ARTIFACTS, exist_ok=True)
    print(f"\nvfs ui screenshots: {ARTIFACTS}")
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    def __init__(self, browser, site):
        self.b, self.site = browser, site

    def open(self, path: str, wait_for: str = "main h1"):
        self.b.get(self.site.url.rstrip("/") + path)
        return self.wait(wait_for)

    def wait(self, css: str):
        return WebDriverWait(self.b, 20).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def click(self, css: str, then: str = "main h1"):
        old = self.b.find_element(By.TAG_NAME, "html")
        self.b.find_element(By.CSS_SELECTOR, css).click()
        WebDriverWait(self.b, 20).until(lambda _: _left(old))
        return self.wait(then)

    def shot(self, name: str) -> None:
        self.b.save_screenshot(os.path.join(ARTIFACTS, f"{name}.png"))

    def no_console_errors(self) -> None:
        errors = [e for e in self.b.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"console errors on {self.b.current_url}: {errors}"

    def text(self, css: str) -> str:
        return self.b.find_element(By.CSS_SELECTOR, css).text


def _left(element) -> bool:
    """Whether the page ``element`` was on has been replaced. Selenium's
    ``staleness_of`` knows only StaleElementReferenceException; while the old document
    is being torn down Chromium may answer "Node with given id does not belong to the
    document" instead (a WebDriverException), which says the same."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


@pytest.fixture
def page(browser, site):
    p = Page(browser, site)
    browser.get_log("browser")  # start each test with an empty console
    return p


def test_history_commit_preview_diff(page, demo):
    page.open("/", "table.history tr.commit")
    rows = page.b.find_elements(By.CSS_SELECTOR, "table.history tr.commit")
    assert [r.get_attribute("data-id") for r in rows][-2:] == [demo.commits["v2"],
                                                              demo.commits["v1"]]
    assert page.b.find_elements(By.CSS_SELECTOR, "td.graphcell svg circle")
    assert "v1" in page.text("table.history") and "experiment" in page.text("table.history")
    page.shot("history")
    page.no_console_errors()
    # history -> the commit v2's tree
    page.click(f'tr.commit[data-id="{demo.commits["v2"]}"] a.commit-link', "table.tree")
    assert "raw.csv" in page.text("table.tree") and "notes/" in page.text("table.tree")
    page.shot("tree")
    page.no_console_errors()
    # tree -> a CSV preview as a table
    page.click('a.file-link[href*="raw.csv"]', "#preview table.data")
    cells = [c.text for c in page.b.find_elements(By.CSS_SELECTOR, "#preview th")]
    assert cells == ["id", "value", "label"]
    assert page.text("#preview table.data tr:nth-child(2)").split() == ["0", "0.0", "name0"]
    page.shot("file-csv")
    page.no_console_errors()
    # the diff v1 -> v2, then one modified text file side by side
    page.open("/diff?a=v1&b=v2", "#diff-summary")
    assert "2 modified" in page.text("#diff-summary")
    assert "config.json → settings.json" in page.text("table.changes")
    page.shot("diff")
    page.click('a.modified-link[href*="readme.txt"]', "#side-by-side")
    changed = page.b.find_element(By.CSS_SELECTOR, "#side-by-side tr.replace")
    assert "second line changed" in changed.text
    page.shot("diff-file")
    page.no_console_errors()


def test_diff_chosen_in_history(page, demo):
    page.open("/", "table.history tr.commit")
    page.b.find_element(By.CSS_SELECTOR, f'input[name=a][value="{demo.commits["v1"]}"]').click()
    page.b.find_element(By.CSS_SELECTOR, f'input[name=b][value="{demo.commits["v2"]}"]').click()
    page.click("#diff-selected", "#diff-summary")
    assert "1 renamed" in page.text("#diff-summary")
    page.no_console_errors()


@pytest.mark.parametrize("path,css,expect", [
    ("table.parquet", "#preview table.data", "s0"),
    ("sim.h5", "#preview table.data", "/run1/temperature dataset 10 × 20 float64"),
    ("arr.npy", "#npy-shape", "3 × 4"),
    ("params.yaml", "#preview pre", "epochs: 3"),
    ("config.json", "#preview pre", '"layers"'),
    ("blob.bin", "#preview pre", "00000000  00 01 02"),
    ("passwd-link", "#link-target", "/etc/passwd"),
])
def test_previews(page, demo, path, css, expect):
    page.open(f"/file?rev=v1&path={path}", css)
    assert expect in page.text(css)
    if path in ("table.parquet", "sim.h5"):
        page.shot(f"file-{path.split('.')[-1]}")
    page.no_console_errors()


def test_image_preview_loads(page):
    img = page.open("/file?rev=v1&path=img/pic.png", "#image")
    WebDriverWait(page.b, 20).until(
        lambda b: b.execute_script("return arguments[0].complete", img))
    assert page.b.execute_script("return arguments[0].naturalWidth", img) == 8
    page.no_console_errors()


def test_runs_compare_lineage(page, demo):
    page.open("/runs", "table.runs tr.run")
    rows = page.b.find_elements(By.CSS_SELECTOR, "table.runs tr.run")
    assert len(rows) == 5
    page.shot("runs")
    # sort by the metric loss, ascending: the first train run (loss 0.5) first
    page.open("/runs?sort=metrics.python:loss&desc=0", "table.runs tr.run")
    first = page.b.find_element(By.CSS_SELECTOR, "table.runs tr.run")
    assert first.get_attribute("data-id") == demo.train_runs[0]
    # filter by a param value
    page.open("/runs", "#filter")
    page.b.find_element(By.CSS_SELECTOR, "#filter").send_keys("lr=0.05")
    page.click("#runs-filter button", "table.runs tr.run")
    ids = [r.get_attribute("data-id")
           for r in page.b.find_elements(By.CSS_SELECTOR, "table.runs tr.run")]
    assert ids == [demo.train_runs[1]]
    page.no_console_errors()
    # pick the three train runs and compare them
    page.open("/runs", "table.runs tr.run")
    for rid in demo.train_runs:
        page.b.find_element(By.CSS_SELECTOR, f'tr.run[data-id="{rid}"] input.pick').click()
    page.click("#compare-selected", "table.compare")
    changed = page.b.find_elements(By.CSS_SELECTOR, "table.compare tr.changed th")
    assert {c.text for c in changed} >= {"* python:lr", "* python:loss"}
    assert "python:epochs" in page.text("table.params") and \
        page.b.find_elements(By.CSS_SELECTOR, "table.params tr.same")
    assert len(page.b.find_elements(By.CSS_SELECTOR, "#plots svg.plot")) == 2
    page.shot("compare")
    page.no_console_errors()
    # compare -> the lineage of the last run's output, then upstream
    page.click("a.output-lineage", "#lineage-graph svg")
    nodes = page.b.find_elements(By.CSS_SELECTOR, "#lineage-graph .node")
    labels = " ".join(n.text for n in nodes)
    assert "model.bin" in labels and "run train" in labels and "run prepare" in labels
    page.shot("lineage")
    page.no_console_errors()
    clean = page.b.find_element(By.CSS_SELECTOR, '#lineage-graph a.node[data-id^="clean.csv@"]')
    old = page.b.find_element(By.TAG_NAME, "html")
    clean.click()
    WebDriverWait(page.b, 20).until(EC.staleness_of(old))
    page.wait("#lineage-graph svg")
    assert page.text("main h1") == "Lineage of clean.csv"
    labels = " ".join(n.text for n in page.b.find_elements(By.CSS_SELECTOR, "#lineage-graph .node"))
    assert "run prepare" in labels and "run train" not in labels
    page.no_console_errors()


def test_run_page(page, demo):
    page.open(f"/run?id={demo.runs['train'][:12]}", "#run-command")
    assert "Declared inputs" in page.text("main") and "clean.csv" in page.text("main")
    assert "model.bin" in page.text("main")
    page.shot("run")
    page.no_console_errors()


def test_pipeline_dag(page):
    page.open("/dag", "#dag-graph svg")
    labels = [n.text for n in page.b.find_elements(By.CSS_SELECTOR, "#dag-graph .node")]
    assert any("prepare" in t for t in labels) and any("train" in t for t in labels)
    assert page.b.find_elements(By.CSS_SELECTOR, "#dag-graph line.edge")
    page.shot("dag")
    page.no_console_errors()


@pytest.mark.parametrize("path,named", [
    ("/tree?rev=nosuchrev", "nosuchrev"),
    ("/file?rev=v1&path=no/such/file.csv", "no/such/file.csv"),
    ("/run?id=abcdef0123", "abcdef0123"),
    ("/no/such/page", "/no/such/page"),
])
def test_not_found_pages(page, path, named):
    page.open(path, "#error-message")
    assert "404" in page.text("#error-code")
    assert named in page.text("#error-message")

"""`ecr report`'s page in a real headless browser: every image loads, the tables and the examples are there.

Uses Debian's `chromium` and `chromedriver` from PATH (CI installs both); selenium is never allowed to fetch a
driver. Skipped, saying what is missing, where either is not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecr.evaluation.report import write_report
from tests.unit.evaluation.fakes import completion, write_predictions
from tests.unit.evaluation.test_score import _with_stored_sentences, rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason=f"needs a headless browser: chromium={CHROMIUM}, chromedriver={CHROMEDRIVER} (apt install chromium "
    "chromium-driver)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    a = write_predictions(root / "sft.jsonl", _with_stored_sentences(rows()))
    other = rows()
    other[2]["completion"] = completion("He is sad. It is <b>not bold</b> here.", "happy")  # still inconsistent
    other[5]["completion"] = completion("She is happy.", "fear")  # now right: WAR +1/6
    b = write_predictions(root / "grpo.jsonl", _with_stored_sentences(other))
    return write_report([a, b], root / "out", labels="dfew", bootstrap=100)


def test_page_renders_with_images_tables_and_examples(browser, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert browser.title == "ecr report: sft, grpo"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 3  # two confusion matrices, the recall bars
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);"
    )
    assert all(ok for _, ok in loaded), loaded

    headline = browser.find_element(By.ID, "headline")
    header = [th.text for th in headline.find_elements(By.CSS_SELECTOR, "thead th")]
    assert header == ["metric (%)", "sft", "grpo", "grpo − sft (points)", "p"]
    metrics = [th.text for th in headline.find_elements(By.CSS_SELECTOR, "tbody th")]
    assert metrics[:5] == ["WAR", "UAR", "EPC", "EEA", "FCR"]
    war = headline.find_element(By.CSS_SELECTOR, 'td[data-metric="war"][data-run="sft"] .v').text
    assert war == "66.67"
    assert headline.find_element(By.CSS_SELECTOR, 'td[data-metric="war"][data-delta="grpo"] .v').text == "+16.67"
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.quadrants")) == 2

    examples = browser.find_elements(By.CSS_SELECTOR, "details.example")
    assert [e.get_attribute("data-id") for e in examples] == ["c1", "c2", "c5"] * 2
    first = examples[0]
    assert not first.find_element(By.CSS_SELECTOR, ".sentence").is_displayed()  # closed until clicked
    first.find_element(By.TAG_NAME, "summary").click()
    sentence = first.find_element(By.CSS_SELECTOR, ".sentence")
    assert sentence.is_displayed() and sentence.text == "She is sad."
    legend = {c.text: c for c in browser.find_elements(By.CSS_SELECTOR, ".legend .sentence")}
    assert {"happy", "sad"} <= set(legend)
    colour = sentence.value_of_css_property("background-color")
    assert colour == legend["sad"].value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    escaped = examples[4]
    escaped.find_element(By.TAG_NAME, "summary").click()
    texts = [s.text for s in escaped.find_elements(By.CSS_SELECTOR, ".sentence")]
    assert "It is <b>not bold</b> here." in texts, texts  # the file's markup stayed text

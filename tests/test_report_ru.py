"""`lab5 report --lang ru`: the exported page has no English prose outside code, file names,
library names and the terms the course keeps in English."""

import re
from html.parser import HTMLParser

import pytest

from lab5_utils.report.build import run_report
from tests.test_report import TINY

# Names and terms kept in English on purpose (libraries, products, menu items, metrics' names).
PHRASES = ("Runtime > Run all", "Run all", "Runtime > Change runtime type", "Open in Colab",
           "Google Drive", "Transfer Learning", "Fine Tuning", "The fine-tuning recipe",
           "Food-101 without downloading it")
WORDS = {
    "EfficientNet", "Keras", "TensorFlow", "TensorBoard", "ImageNet", "Food", "GPU", "CPU", "TPU",
    "XLA", "EMA", "Adam", "AdamW", "BatchNorm", "RandAugment", "mixup", "cutmix", "TTA", "flip",
    "Grad-CAM", "Colab", "Kaggle", "Drive", "MyDrive", "GitHub", "README", "HTML", "JPEG", "RSS",
    "HParams",
    "softmax", "dropout", "fit", "callback", "NaN", "Wilson", "one-hot", "top", "tfds", "keras-io",
    "demo", "quick", "full", "p", "n", "lr", "C", "e", "x", "UTC", "uint", "tensorflow-datasets",
    "transfer",  # the transfer run's folder, in the tables' run column
}
PROMPT = re.compile(r"(In|Out)\s*\[\d*\]:")
LATIN = re.compile(r"[A-Za-z][A-Za-z0-9_.=/:'-]*")


class _Text(HTMLParser):
    """The page's text nodes outside code, <pre>, scripts, styles and the head."""

    SKIP = {"code", "pre", "script", "style", "head"}

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.SKIP

    def handle_endtag(self, tag):
        self.depth -= tag in self.SKIP

    def handle_data(self, data):
        if not self.depth and data.strip():
            self.parts.append(data.strip())


def english_left(html: str) -> list[str]:
    """Text nodes with a Latin word that is neither an identifier (digits, `_`, `=`, `.`, `/`)
    nor on the allow-list."""
    parser = _Text()
    parser.feed(html)
    found = []
    for text in parser.parts:
        if PROMPT.fullmatch(text):  # a code cell's prompt, shown with its code
            continue
        for phrase in PHRASES:
            text = text.replace(phrase, " ")
        words = [w.strip(".:'-") for w in LATIN.findall(text)]
        if any(w and w not in WORDS and not re.search(r"[0-9_=./:]", w) for w in words):
            found.append(text)
    return found


def test_the_checker_finds_english_prose_and_passes_names():
    page = ("<html><head><title>Lab 5 report</title></head><body><p>Точность EfficientNet-B0 на "
            "lr=1e-04, <code>best.keras</code></p><pre>Epoch 1/3</pre><div>In\xa0[2]:</div>"
            "<p>within noise</p></body>")
    assert english_left(page) == ["within noise"]


@pytest.mark.slow
def test_the_russian_report_has_no_english_prose(tmp_path):
    """Slow: it runs the four notebooks with papermill (tiny sizes), in Russian, and reads the
    exported HTML."""
    result = run_report("demo", ["1e-3"], TINY, out=tmp_path / "out", jobs=2,
                        figures_dir=tmp_path / "figures", lang="ru")
    assert result.exit_code == 0, [(r.name, r.error) for r in result.failed]
    html = result.html.read_text()
    assert english_left(html) == []
    for page in (result.out / "html").glob("*.html"):  # each notebook's own page too
        assert english_left(page.read_text()) == [], page.name
    assert "Коротко" in html and "Вывод" in html and "критерий Макнемара" in html
    assert re.search(r"\d+,\d\d % \[95 % ДИ \d+,\d–\d+,\d\]", html)  # the decimal comma

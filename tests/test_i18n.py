"""`lab5_utils.i18n` and the catalogs: every message translated, Russian plurals, numbers and
dates in the language's form, English unchanged, and a language without a catalog refused."""

import re
import shutil
from datetime import datetime, timezone

import nbformat
import pandas as pd
import pytest

from lab5_utils import i18n
from lab5_utils.i18n import use
from lab5_utils.report import catalogs, narrative

COUNTS = (1, 2, 5, 11, 21, 22, 25)
# Russian's three forms: 1, 21 (one); 2, 22 (few); 5, 11, 25 (many).
FORM = {1: 0, 21: 0, 2: 1, 22: 1, 5: 2, 11: 2, 25: 2}
NOUNS = {"epoch": ("эпоха", "эпохи", "эпох"), "run": ("запуск", "запуска", "запусков"),
         "image": ("изображение", "изображения", "изображений"),
         "class": ("класс", "класса", "классов")}


@pytest.mark.parametrize("lang", i18n.languages()[1:])
def test_every_message_of_the_code_is_in_each_catalog_and_translated(lang):
    """The check `make messages` runs: a new `_()` (or notebook paragraph) without its entry,
    an empty or fuzzy entry, or a plural without all its forms fails here."""
    assert "ru" in i18n.languages()
    assert catalogs.problems(lang) == {"missing": [], "untranslated": []}


def test_the_check_finds_a_message_the_catalog_lacks(monkeypatch):
    from babel.messages.catalog import Catalog

    pot = Catalog(locale="ru")
    pot.add("a message added after the last update")
    monkeypatch.setattr(catalogs, "template", lambda: pot)
    assert catalogs.problems("ru")["missing"] == ["a message added after the last update"]


def _recipe_epochs(n):
    from lab5_utils.config import LabConfig
    from lab5_utils.model import recipe

    return recipe.recipe_table(LabConfig.preset("demo").replace(transfer_epochs=n), "transfer").iat[0, 1]


def _runs(n):
    table = pd.DataFrame({"status": ["finished"] * n, "wall time (s)": [6.0] * n,
                          "device": ["device: CPU"] * n})
    return narrative.sweep_cost(table)


def _images(n):
    metrics = {"best_val_accuracy": 0.5, "best_epoch": 2, "first_epoch": 1, "last_epoch": 3,
               "final_val_accuracy": 0.5, "final_accuracy": 0.6, "trainable_params": 10,
               "seconds_per_epoch": 1.0, "test_accuracy": 0.5, "num_test": n}
    return narrative.describe_run(metrics)


def _classes(n):
    import matplotlib.pyplot as plt

    from lab5_utils.report import plots

    fig = plots.plot_class_balance(pd.Series(range(1, n + 1), index=[f"c{i}" for i in range(n)]))
    title = fig.axes[0].get_title()
    plt.close(fig)
    return title


@pytest.mark.parametrize("noun, text", [("epoch", _recipe_epochs), ("run", _runs),
                                        ("image", _images), ("class", _classes)])
def test_counted_nouns_take_the_russian_plural_form_of_their_number(noun, text):
    for n in COUNTS:
        with use("ru"):
            shown = text(n)
        assert f"{n} {NOUNS[noun][FORM[n]]}" in shown, (n, shown)
        with use("en"):  # English keeps its words
            assert re.search(rf"\b{n} (test )?{noun}", text(n)), (n, text(n))


def test_numbers_in_sentences_and_tables_take_the_decimal_comma_in_russian():
    from lab5_utils import tables

    frame = pd.DataFrame({"trainable_params": [1467370], "seconds_per_epoch": [4.25]})
    with use("ru"):
        assert i18n.pct(42.5) == "42,50 %"
        assert tables.p_equals(0.5034) == "p = 0,503" and tables.p_value(0.0001) == "< 0,001"
        shown = tables.resources_view(frame)
        assert shown.iloc[0].tolist() == ["1\xa0467\xa0370", "4,2"]
        assert list(shown.columns) == ["обучаемые параметры", "секунд на эпоху"]
    with use("en"):
        assert i18n.pct(42.5) == "42.50 %" and tables.p_equals(0.5034) == "p = 0.503"
        assert tables.resources_view(frame).iloc[0].tolist() == ["1,467,370", "4.2"]


def test_dates_in_the_language_s_form():
    when = datetime(2026, 12, 7, 9, 5, tzinfo=timezone.utc)
    with use("en"):
        assert i18n.date_time(when) == "2026-12-07 09:05 UTC"
    with use("ru"):
        assert i18n.date_time(when) == "7 декабря 2026 г., 09:05 UTC"


def test_english_markdown_is_left_as_it_is_and_russian_is_translated_paragraph_by_paragraph():
    for path in sorted(catalogs.NOTEBOOKS.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            with use("en"):
                assert i18n.translate_markdown(cell.source) == cell.source
            with use("ru"):
                russian = i18n.translate_markdown(cell.source)
            keep = [p for p in i18n.markdown_paragraphs(cell.source) if not i18n.is_message(p)]
            assert all(p in russian for p in keep)  # the setup marker, anchors
            changed = set(i18n.markdown_paragraphs(russian)) - set(keep)
            assert not changed & set(i18n.markdown_paragraphs(cell.source)), path.name


def test_every_notebook_takes_lang_and_sets_it_before_any_text():
    for path in sorted(catalogs.NOTEBOOKS.glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        params = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
        assert 'lang = "en"' in params.source, path.name
        code = [c.source for c in cells if c.cell_type == "code"]
        first = next(i for i, s in enumerate(code) if "i18n.set_language(lang)" in s)
        assert not any("narrative." in s or "plots." in s for s in code[:first]), path.name


def test_a_catalog_without_its_compiled_file_is_read_from_the_po(tmp_path, monkeypatch):
    """`pip install` from git (Colab) runs no `make`: the .po is compiled in memory."""
    shutil.copytree(i18n.LOCALE_DIR / "ru", tmp_path / "ru",
                    ignore=shutil.ignore_patterns("*.mo"))
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    loaded = i18n.translations.__wrapped__("ru")
    assert loaded.gettext("status") == "статус"
    assert loaded.ngettext("{n} run", "{n} runs", 5) == "{n} запусков"


def test_a_language_without_a_catalog_is_refused_with_the_list(tmp_path, capsys):
    from lab5_utils import cli
    from lab5_utils.report.build import run_report

    with pytest.raises(SystemExit) as stop:
        cli.main(["report", "--lang", "de", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "--lang='de' is not available: the report's languages are en, ru" in capsys.readouterr().err
    with pytest.raises(ValueError, match="languages are en, ru"):
        run_report(out=tmp_path / "out", lang="de")
    with pytest.raises(ValueError, match="--jobs"):  # a report that stops keeps no language
        run_report(out=tmp_path / "out", lang="ru", jobs=0)
    with pytest.raises(ValueError, match="lang='fr'"):
        i18n.set_language("fr")
    assert not (tmp_path / "out").exists() and i18n.language() == "en"

"""The report's language: gettext catalogs (`locale/<lang>/LC_MESSAGES/lab5.po`), `_()` and
`ngettext` in the current language, and numbers and dates in its form.

English is the messages themselves (no catalog). Another language reads its compiled `lab5.mo`
when it is at least as new as its `.po` (`make install` compiles them), else compiles the `.po`
in memory with Babel, so a `pip install` from git (Colab) needs no build step.
Numbers people read (sentences and tables alike) use the language's decimal and group symbols
(Russian: `42,50 %`, `25 250`); CSV and JSON files keep Python's form; learning rates keep
their setting form (`1e-04`), since they name runs and folders.
"""

from __future__ import annotations

import contextlib
import functools
import gettext
import io
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

DOMAIN = "lab5"
DEFAULT = "en"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
_current = {"lang": DEFAULT}
T = TypeVar("T")


def languages() -> list[str]:
    """The report's languages: English and every language with a catalog."""
    found = {p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")}
    return [DEFAULT, *sorted(found - {DEFAULT})]


def check_language(lang: object, name: str = "--lang") -> str:
    """`lang` if there is a catalog for it, else a ValueError listing the languages there are."""
    if not isinstance(lang, str) or lang not in languages():
        raise ValueError(f"{name}={lang!r} is not available: the report's languages are "
                         f"{', '.join(languages())} (README, 'Adding a language', says how to "
                         "add one).")
    return lang


def catalog_path(lang: str, suffix: str = ".po") -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}{suffix}"


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of `lang` (English: the messages as they are)."""
    if lang == DEFAULT:
        return gettext.NullTranslations()
    po, mo = catalog_path(check_language(lang)), catalog_path(lang, ".mo")
    if mo.is_file() and mo.stat().st_mtime >= po.stat().st_mtime:
        with mo.open("rb") as f:
            return gettext.GNUTranslations(f)
    return gettext.GNUTranslations(io.BytesIO(compile_catalog(po)))


def compile_catalog(po: Path) -> bytes:
    """A `.po` file as `.mo` bytes (Babel; fuzzy entries left out, as gettext's msgfmt does)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as f:
        catalog = read_po(f)
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


def set_language(lang: str) -> str:
    """Make `lang` the language of `_()`, `ngettext` and the number formats; returns the last one."""
    previous = _current["lang"]
    translations(check_language(lang, "lang"))
    _current["lang"] = lang
    return previous


@contextlib.contextmanager
def use(lang: str) -> Iterator[None]:
    """`set_language(lang)` for the `with` block only."""
    previous = set_language(lang)
    try:
        yield
    finally:
        _current["lang"] = previous


def in_language(func: Callable[..., T]) -> Callable[..., T]:
    """Decorator: `func(..., lang=...)` runs in `lang` (checked first; default English), and the
    language before it is back afterwards, whether it returns or raises."""
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> T:
        with use(check_language(kwargs.get("lang", DEFAULT))):
            return func(*args, **kwargs)

    return run


def language() -> str:
    return _current["lang"]


def _(message: str) -> str:
    """`message` in the current language."""
    return translations(_current["lang"]).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a counted message for `n` (Russian has three: 1 эпоха, 2 эпохи, 5 эпох)."""
    return translations(_current["lang"]).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a message for the catalog without translating it (a word translated where shown)."""
    return message


def localize(text: str) -> str:
    """Python's number form in `text` (`1,234.5`) in the current language's (`1 234,5`)."""
    from babel.numbers import get_decimal_symbol, get_group_symbol

    lang = _current["lang"]
    decimal, group = get_decimal_symbol(lang), get_group_symbol(lang)
    if (decimal, group) == (".", ","):
        return text
    return text.translate({ord("."): decimal, ord(","): group})


def num(value: float, spec: str = ".2f") -> str:
    """`value` formatted by the format `spec` (`.2f`, `+.2f`, `,`) in the language's form."""
    return localize(format(value, spec))


def pct(value: float, decimals: int = 2) -> str:
    """A percentage for sentences: `42.50 %` (`42,50 %`)."""
    return f"{num(value, f'.{decimals}f')} %"


def date_time(when: datetime | None = None) -> str:
    """A UTC time as the language writes it (the pattern is a message: `yyyy-MM-dd HH:mm 'UTC'`)."""
    from babel.dates import format_datetime

    when = when or datetime.now(timezone.utc)
    return format_datetime(when, _("yyyy-MM-dd HH:mm 'UTC'"), tzinfo=timezone.utc,
                           locale=_current["lang"])


def markdown_paragraphs(markdown: str) -> list[str]:
    """A notebook's Markdown cell in the pieces the catalog holds: its paragraphs."""
    return markdown.split("\n\n")


def is_message(paragraph: str) -> bool:
    """Whether a paragraph has words to translate (not empty, not an HTML comment or anchor)."""
    text = paragraph.strip()
    return bool(text) and not text.startswith("<")


def translate_markdown(markdown: str) -> str:
    """A Markdown cell in the current language, paragraph by paragraph."""
    return "\n\n".join(_(p) if is_message(p) else p for p in markdown_paragraphs(markdown))

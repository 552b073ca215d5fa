"""Upkeep of the report's catalogs (Babel), for whoever adds or changes a message:

    python -m lab5_utils.report.catalogs extract   # every message -> lab5_utils/locale/lab5.pot
    python -m lab5_utils.report.catalogs update    # the template merged into every language's .po
    python -m lab5_utils.report.catalogs compile   # every .po -> .mo (`make install` does this)
    python -m lab5_utils.report.catalogs check     # messages a catalog lacks or leaves untranslated

Messages are the package's `_()`, `N_()` and `ngettext()` calls, the same calls in the
notebooks' code cells, and the paragraphs of the notebooks' Markdown cells (`export`
translates those when it joins the report). `make messages` runs extract and update.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from lab5_utils.i18n import (
    DOMAIN,
    LOCALE_DIR,
    catalog_path,
    compile_catalog,
    is_message,
    languages,
    markdown_paragraphs,
)

KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
PACKAGE = Path(__file__).resolve().parents[1]
NOTEBOOKS = PACKAGE.parent / "notebooks"


def template():
    """A Babel catalog of every message in the package and the notebooks."""
    import nbformat
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract, extract_from_dir

    catalog = Catalog(project="lab5", domain=DOMAIN, fuzzy=False)
    for name, line, message, comments, context in extract_from_dir(
            PACKAGE, [("**.py", "python")], keywords=KEYWORDS, comment_tags=("TRANSLATORS:",)):
        catalog.add(message, locations=[(f"lab5_utils/{name}", line)], auto_comments=comments,
                    context=context)
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            where = f"notebooks/{path.name}#{cell.get('id', '')}"
            if cell.cell_type == "markdown":
                for paragraph in filter(is_message, markdown_paragraphs(cell.source)):
                    catalog.add(paragraph, locations=[(where, 0)])
            elif cell.cell_type == "code":
                for line, message, _comments, context in extract(
                        "python", io.BytesIO(cell.source.encode()), keywords=KEYWORDS):
                    catalog.add(message, locations=[(where, line)], context=context)
    return catalog


def extract_template() -> Path:
    from babel.messages.pofile import write_po

    path = LOCALE_DIR / f"{DOMAIN}.pot"
    with path.open("wb") as f:
        write_po(f, template(), width=100, sort_output=True, include_lineno=False)
    return path


def update() -> list[Path]:
    """Merge the template into each language's `.po`: new messages empty, gone ones obsolete."""
    from babel.messages.pofile import read_po, write_po

    pot, written = template(), []
    for lang in languages()[1:]:
        path = catalog_path(lang)
        with path.open("rb") as f:
            catalog = read_po(f, locale=lang)
        catalog.update(pot, no_fuzzy_matching=True)
        with path.open("wb") as f:
            write_po(f, catalog, width=100, sort_output=True, include_lineno=False)
        written.append(path)
    return written


def compile_all() -> list[Path]:
    written = []
    for lang in languages()[1:]:
        mo = catalog_path(lang, ".mo")
        mo.write_bytes(compile_catalog(catalog_path(lang)))
        written.append(mo)
    return written


def problems(lang: str) -> dict[str, list[str]]:
    """What the `lang` catalog lacks: messages of the code it does not hold, and entries it
    holds without a translation (empty, any plural form empty, or fuzzy)."""
    from babel.messages.pofile import read_po

    with catalog_path(lang).open("rb") as f:
        catalog = read_po(f, locale=lang)
    missing = [m.id if isinstance(m.id, str) else m.id[0]
               for m in template() if m.id and catalog.get(m.id, m.context) is None]
    untranslated = []
    for m in catalog:
        strings = m.string if isinstance(m.string, (list, tuple)) else [m.string]
        if m.id and (m.fuzzy or not all(strings)
                     or isinstance(m.id, tuple) and len(strings) != catalog.num_plurals):
            untranslated.append(m.id if isinstance(m.id, str) else m.id[0])
    return {"missing": missing, "untranslated": untranslated}


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:] or ["check"])[0]
    if command == "extract":
        print(extract_template())
    elif command == "update":
        print(*update(), sep="\n")
    elif command == "compile":
        print(*compile_all(), sep="\n")
    elif command == "check":
        bad = {lang: problems(lang) for lang in languages()[1:]}
        for lang, found in bad.items():
            for kind, ids in found.items():
                for message in ids:
                    print(f"{lang}: {kind}: {message[:80]!r}")
        return 1 if any(any(found.values()) for found in bad.values()) else 0
    else:
        print("usage: python -m lab5_utils.report.catalogs extract|update|compile|check",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

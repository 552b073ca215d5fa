"""The HTML report: executed notebooks joined into one notebook under an introduction, exported by
nbconvert to one self-contained page (images embedded, no scripts from a CDN)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from lab5_utils.config import LabConfig
from lab5_utils.i18n import N_, _, date_time, translate_markdown
from lab5_utils.report.console import strip_colours
from lab5_utils.tables import clock


class Section(Protocol):
    """What the report shows of one executed notebook (`report.NotebookRun`)."""

    title: str
    source: str
    status: str
    error: str
    seconds: float
    notebook: Path | None
    reused: bool

    @property
    def anchor(self) -> str: ...


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- Self-contained: no scripts from a CDN (MathJax, require.js and Mermaid are unused). -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
_SETUP = "<!-- setup:"  # in each notebook's first cell, before the note on presets and Colab
_HIDDEN_TAGS = {"parameters", "injected-parameters", "papermill-error-cell-tag"}
_STATUSES = (N_("Failed"), N_("Skipped"), N_("failed"), N_("skipped"))  # NotebookRun.status
_GLANCE = "at-a-glance"  # notebook 04's headline and figure: shown first, under the title


def export_html(nb: Any, hide_code: bool = True, title: str = "Lab 5") -> str:
    """One self-contained HTML page (images embedded, no external scripts), its Markdown cells in
    the current language (`i18n`; cells already translated stay as they are)."""
    import jinja2
    from nbconvert import HTMLExporter

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = translate_markdown(cell.source)

    exporter = HTMLExporter(
        template_name="lab", template_file="lab5_report.html.j2",
        extra_loaders=[jinja2.DictLoader({"lab5_report.html.j2": _TEMPLATE})],
        exclude_input=hide_code, exclude_input_prompt=hide_code, exclude_output_prompt=True,
    )
    body, _resources = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def combine_notebooks(runs: Sequence[Section], intro: str, hide_code: bool = True,
                      glance: str = "", contents: str = "") -> Any:
    """One notebook: the introduction; the cells tagged `at-a-glance` (notebook 04's headline
    and figure; the `glance` Markdown when none ran); `contents`; then per run a heading and
    its executed cells (headings demoted one level; papermill's error banners replaced by one
    line naming the error; the presets note and a repeated notebook's explanations kept once)."""
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    notebooks = {id(run): nbformat.read(run.notebook, as_version=4) for run in runs
                 if run.notebook is not None}
    at_glance = [cell for nb in notebooks.values() for cell in nb.cells if _GLANCE in _tags(cell)
                 and (cell.cell_type == "markdown" or cell.outputs)]
    for cell in at_glance:
        if cell.cell_type == "markdown":
            cell.source = translate_markdown(cell.source)
    if not any(cell.cell_type == "code" for cell in at_glance):
        at_glance = [new_markdown_cell(_("## At a glance") + f"\n\n{glance}")] if glance else []
    combined = new_notebook(cells=[new_markdown_cell(intro), *at_glance])
    if contents:
        combined.cells.append(new_markdown_cell(contents))
    seen: set[str] = set()
    for run in runs:
        heading = f'<a id="{run.anchor}"></a>\n\n# {run.title}'
        if run.status != "done":
            heading += f"\n\n**{_(run.status.capitalize())}:** {first_line(run.error)}"
        combined.cells.append(new_markdown_cell(heading))
        if id(run) not in notebooks:
            continue
        nb = notebooks[id(run)]
        repeated = run.source in seen  # 03 once per run of the sweep: its explanations once
        seen.add(run.source)
        combined.metadata.setdefault("kernelspec", nb.metadata.get("kernelspec", {}))
        combined.metadata.setdefault("language_info", nb.metadata.get("language_info", {}))
        for cell in nb.cells:
            tags = _tags(cell)
            if hide_code and cell.cell_type == "code":  # warnings on stderr are not for readers
                cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
            if tags & (_HIDDEN_TAGS | {_GLANCE}) or (
                    hide_code and cell.cell_type == "code" and not cell.outputs):
                continue
            if cell.cell_type == "markdown":
                if repeated:
                    continue
                if _SETUP in cell.source:  # the presets note: once, in the first section
                    cell.source = cell.source if len(seen) == 1 else cell.source.split(_SETUP)[0]
                cell.source = _demote_headings(translate_markdown(cell.source))
            combined.cells.append(cell)
    for i, cell in enumerate(combined.cells):
        cell["id"] = f"cell-{i}"
    return combined


def _tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _demote_headings(markdown: str) -> str:
    lines, fenced = [], False
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        lines.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(lines)


def intro_markdown(preset: str, cfg: LabConfig, hide_code: bool) -> str:
    """The report's title, when and how it was made, and a warning when it is not ImageNet
    transfer learning."""
    lines = [
        _("# Lab 5 report: fine-tuning EfficientNet-B0 (preset `{preset}`)").format(preset=preset),
        "", _("Generated by `lab5 report` on {when}. Runs: `{runs}`.").format(
            when=date_time(), runs=cfg.run_root) + " "
        + (_("Code cells are hidden; `lab5 report --show-code` includes them.")
           if hide_code else _("Code cells are shown.")),
    ]
    if cfg.weights != "imagenet":
        lines += ["", "> " + _("**Not ImageNet transfer learning.** This report uses "
                               "`weights={weights}` on the `{dataset}` dataset: the numbers show "
                               "that the pipeline works, they are not comparable with "
                               "EfficientNet-B0 pretrained on ImageNet.").format(
            weights=repr(cfg.weights), dataset=cfg.dataset)]
    return "\n".join(lines)


def contents_markdown(runs: Sequence[Section]) -> str:
    """The table of sections: each notebook's status (reused, failed, skipped) and time."""
    lines = [_("## Sections"), "", "| {} | {} | {} |".format(_("section"), _("status"), _("time")),
             "| --- | --- | --- |"]
    for run in runs:
        status = (_("ok (reused)") if run.reused else _("ok")) if run.status == "done" else (
            f"**{_(run.status)}**: {table_cell(run.error)}")
        lines.append(f"| [{run.title}](#{run.anchor}) | {status} | {clock(run.seconds)} |")
    return "\n".join(lines)


# --- small formatting helpers ---------------------------------------------------------------
def first_line(text: str) -> str:
    text = strip_colours(str(text)).strip()  # papermill's errors carry colours
    return text.splitlines()[0] if text else ""


def table_cell(text: str, limit: int = 200) -> str:
    text = first_line(text).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"

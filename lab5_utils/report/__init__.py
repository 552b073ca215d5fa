"""The report: `lab5 report` plans the sweep, runs notebooks 01-04, writes results.csv, report.json
and the HTML (`build`); papermill, N notebooks at a time (`execute`), what they and every command
print sorted into the console and the log files (`console`); the one HTML page (`export`);
every generated sentence (`narrative`, `narrative_data`); the results table and the chosen
model's evaluation (`analysis`); figures (`plots`); the catalogs' upkeep for the languages
(`catalogs`: extract, update, compile, check; `python -m lab5_utils.report.catalogs`).

May import: every room below (`train`, `cost`, `evaluate`, `data`, `model`) and the top modules;
only `cli` imports it.
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    build="run_report NOTEBOOKS",
    analysis="results_table glance_data evaluate_models",
    narrative="headline conclusion describe_run",
)

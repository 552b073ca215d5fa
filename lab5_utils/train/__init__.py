"""One stage and the runs around it: `run_stage` and the LR range test (`training`), a run folder's
state: finished, same settings, what a kill left (`rundir`), `history.csv`, TensorBoard logs and
HParams (`epoch_logs`), the runs of a sweep (`sweep`), the in-epoch progress line and the sweep's
ETA (`progress`).

May import: `cost`, `evaluate`, `data`, `model` and the top modules.
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    training="run_stage lr_range_test default_run_dir is_finished RunResult",
    rundir="RunError",
    epoch_logs="load_history",
    sweep="sweep_runs finetune_run report_runs",
)

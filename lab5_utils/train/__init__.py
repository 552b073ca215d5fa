"""One stage and the runs around it: `run_stage` and the LR range test (`training`), a run folder's
state: finished, same settings, what a kill left (`rundir`), `history.csv`, TensorBoard logs and
HParams (`epoch_logs`), the runs of a sweep (`sweep`), the in-epoch progress line and the sweep's
ETA (`progress`).

May import: `cost`, `evaluate`, `data`, `model` and the top modules.
"""

from lab5_utils import hand_on

_NAMES = {
    "run_stage": "training",
    "lr_range_test": "training",
    "default_run_dir": "training",
    "is_finished": "training",
    "RunResult": "training",
    "RunError": "rundir",
    "load_history": "epoch_logs",
    "sweep_runs": "sweep",
    "finetune_run": "sweep",
    "report_runs": "sweep",
}
__all__ = sorted(_NAMES)
__getattr__ = hand_on(__name__, _NAMES)

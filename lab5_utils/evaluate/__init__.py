"""What a trained model gets right: predictions and per-class metrics from saved predictions
(`scoring`), `lab5 predict` on photo files (`predict`), Grad-CAM (`gradcam`), Wilson intervals
and McNemar's exact test (`stats`).

May import: `data`, `model` and the top modules.
"""

from lab5_utils import hand_on

_NAMES = {
    "Predictions": "scoring",
    "evaluate_predictions": "scoring",
    "load_predictions": "scoring",
    "top_losses": "scoring",
    "best_and_worst": "scoring",
    "wilson_interval": "stats",
    "mcnemar_exact": "stats",
}
__all__ = sorted(_NAMES)
__getattr__ = hand_on(__name__, _NAMES)

"""What a trained model gets right: predictions and per-class metrics from saved predictions
(`scoring`), `lab5 predict` on photo files (`predict`), Grad-CAM (`gradcam`), Wilson intervals
and McNemar's exact test (`stats`).

May import: `data`, `model` and the top modules.
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    scoring="Predictions evaluate_predictions load_predictions top_losses best_and_worst",
    stats="wilson_interval mcnemar_exact",
)

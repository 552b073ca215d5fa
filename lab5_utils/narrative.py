"""The report's generated text: every sentence is a function of the runs' numbers, worded by
what they show (a gain, a loss or noise), never typed by hand."""

from __future__ import annotations

import math
import re

import pandas as pd

from lab5_utils import stats
from lab5_utils.analysis import (
    best_finetune,
    choice_split,
    finished_finetunes,
    row_ci,
    run_dirs,
    run_title,
)
from lab5_utils.config import LabConfig, lr_label
from lab5_utils.files import project_root, read_json
from lab5_utils.tables import clock, p_equals


def describe_run(metrics: dict, baseline: dict | None = None) -> str:
    """A sentence or two on one finished run, compared with `baseline` when given."""
    seconds = metrics.get("seconds_per_epoch")
    text = (f"Best validation accuracy **{_pct(metrics['best_val_accuracy'])}** at epoch "
            f"{metrics['best_epoch']} (epochs {metrics['first_epoch']}-{metrics['last_epoch']}), "
            f"the model kept; final {_pct(metrics['final_val_accuracy'])} validation and "
            f"{_pct(metrics['final_accuracy'])} training accuracy; "
            f"{metrics['trainable_params']:,} trainable parameters; "
            f"{'-' if seconds is None else f'{seconds:.1f} s'} per epoch.")
    at_test_time = metrics.get("test_time_val_accuracy")
    if at_test_time is not None and at_test_time != metrics["best_val_accuracy"]:
        text += (f" Measured as the test split is ({metrics['test_time']}), its validation "
                 f"accuracy is {_pct(at_test_time)}.")
    if "test_accuracy" in metrics:
        test = _with_ci(metrics["test_accuracy"], metrics["num_test"])
        text += (f" The kept model's test accuracy: {test}"
                 f" on {metrics['num_test']:,} test images (measured once; it chose nothing).")
    if baseline:
        change = 100 * (metrics["best_val_accuracy"] - baseline["best_val_accuracy"])
        text += (f" The transfer model it starts from reached {_pct(baseline['best_val_accuracy'])}"
                 f" validation accuracy: fine-tuning at lr={lr_label(metrics['learning_rate'])} "
                 f"changed it by {change:+.2f} points (part 4 tests the change on the test split).")
    return text


def conclusion(table: pd.DataFrame, suggested_lr: float | None = None) -> str:
    """The report's conclusion, generated from the results table (Markdown): the run is chosen
    on validation; the verdict is its test accuracy against the transfer model's and, in a
    sweep of a setting, each value's against the first value's."""
    transfer = table[table["run"] == "transfer"].iloc[0]
    if transfer["status"] != "finished":
        return "No finished transfer-learning run was found, so there is nothing to conclude yet."
    parts = [f"Transfer learning (EfficientNet-B0 frozen, new head trained) kept its epoch "
             f"{int(transfer['best epoch'])} by validation accuracy ({row_ci(transfer, 'val')}); "
             f"on the {_images(transfer)} test images that model reaches "
             f"**{row_ci(transfer, 'test')}**."]
    best = best_finetune(table)
    done = finished_finetunes(table)
    swept = swept_setting(table)
    what = "learning rate" if swept is None else f"value{'s' if len(done) > 1 else ''} of {swept}"
    if best is None:
        parts.append("No fine-tuning run finished.")
    else:
        n, split = len(done), choice_split(done)
        plural = "s" if n > 1 and swept is None else ""
        parts.append(
            f"Chosen on validation, fine-tuning at **{run_title(best)}** had the best validation "
            f"accuracy of the {n} {what}{plural} that finished ({row_ci(best, split)}"
            + (f" with {best['test-time settings']}," if split != "val" else "")
            + f" at epoch {int(best['best epoch'])}). " + _verdict_sentence(best))
        close = [r for _, r in done.iterrows() if r["run"] != best["run"]
                 and r[f"{split} accuracy (%)"] >= best[f"{split} low (%)"]]
        if close:
            parts.append(
                "Validation does not separate it clearly from "
                + ", ".join(f"{r['setting']} ({r[f'{split} accuracy (%)']:.2f} %)" for r in close)
                + ": their validation accuracies lie inside its 95 % interval.")
        others = [f"{r['setting']}: {_change(r)}" for _, r in done.iterrows()
                  if r["run"] != best["run"]]
        if others:
            parts.append(f"The other {'learning rates' if swept is None else 'values'} on the "
                         "test split: " + "; ".join(others) + ".")
        if swept is not None:
            parts.append(_against_first(done))
    finetune = table[table["run"] != "transfer"]
    for _, r in finetune[finetune["status"] != "finished"].iterrows():
        error = str(r["error"] or "").strip()
        reason = error.splitlines()[0].rstrip(".") if error else "no finished run was found"
        parts.append(f"{r['setting']} {r['status']}: {reason}.")
    if suggested_lr and best is not None and swept is None:
        parts.append(lr_suggestion_text(float(best["learning rate"]), float(suggested_lr)))
    return " ".join(p for p in parts if p)


def swept_setting(table: pd.DataFrame) -> str | None:
    """The setting a sweep varied besides the learning rate (None: a learning-rate sweep)."""
    settings = table.loc[table["run"] != "transfer", "setting"].dropna()
    keys = {s.partition("=")[0] for s in settings if not s.startswith("lr=")}
    return keys.pop() if len(keys) == 1 else None


def _against_first(done: pd.DataFrame) -> str:
    """Each value against the sweep's first value on the same test images."""
    if done.empty:
        return ""
    first = done.iloc[0]
    rows = [r for _, r in done.iloc[1:].iterrows()]
    if not rows:
        return ""
    items = [f"{r['setting']} not compared" if pd.isna(r["McNemar p vs first"]) else
             f"{r['setting']} {r['test change vs first (points)']:+.2f} points "
             f"({p_equals(r['McNemar p vs first'])}, {r['vs first']})" for r in rows]
    return (f"Against the first value, {first['setting']}, on the same test images (McNemar's "
            "exact test): " + "; ".join(items) + ".")


def headline(table: pd.DataFrame) -> str:
    """The report's first lines (Markdown): the run validation chose, its test accuracy with its
    interval, the change against transfer learning with its verdict, and the sweep's cost."""
    transfer = table[table["run"] == "transfer"].iloc[0]
    best = best_finetune(table)
    if transfer["status"] != "finished":
        return "**No result yet:** the transfer-learning run did not finish."
    if best is None:
        lines = [f"**No fine-tuning run finished.** Transfer learning reaches "
                 f"**{row_ci(transfer, 'test')}** on {_images(transfer)} test images."]
    else:
        lines = [f"**Validation chose fine-tuning at {run_title(best)}.** On {_images(best)} test "
                 f"images it reaches **{row_ci(best, 'test')}**; " + _short_verdict(best, transfer)]
    cost = sweep_cost(table)
    if cost:
        lines.append(cost)
    return "\n\n".join(lines)


def _short_verdict(best: pd.Series, transfer: pd.Series) -> str:
    if pd.isna(best["McNemar p"]):
        return (f"transfer learning reaches {transfer['test accuracy (%)']:.2f} % (not compared "
                "image by image: saved test predictions are missing).")
    change = best["test change vs transfer (points)"]
    noise = best["vs transfer"] == "within noise"
    word = "within noise" if noise else ("a significant gain" if change > 0 else "a significant loss")
    return (f"{change:+.2f} points against transfer learning ({transfer['test accuracy (%)']:.2f} "
            f"%): **{word}** (McNemar {p_equals(best['McNemar p'])}).")


def sweep_cost(table: pd.DataFrame) -> str:
    """`Training time: 5 runs, 6:12 on the CPU.` from the finished runs' `wall time (s)`."""
    done = table[(table["status"] == "finished") & table["wall time (s)"].notna()]
    if done.empty:
        return ""
    kinds = done["device"].fillna("").map(_device_kind)
    spent = [f"{clock(done.loc[kinds == k, 'wall time (s)'].sum())} on the {k}"
             for k in sorted(set(kinds))]
    return (f"Training time: {len(done)} run{'s' if len(done) > 1 else ''}, "
            + " and ".join(spent) + " (fit only: tracing, evaluation and notebooks not counted).")


def _device_kind(device: str) -> str:
    """"GPU", "TPU" or "CPU" from metrics.json's `device` line ("device: GPU (Tesla T4); ...")."""
    found = re.match(r"device: (GPU|TPU)", device)
    return found.group(1) if found else "CPU"


def _verdict_sentence(row: pd.Series) -> str:
    """What the chosen run's test accuracy says against the transfer model's."""
    if pd.isna(row["test accuracy (%)"]):
        return "It has no test measurement, so there is no verdict."
    text = f"On the test split it reaches **{row_ci(row, 'test')}**"
    if pd.isna(row["McNemar p"]):
        return text + ("; it cannot be compared with the transfer model image by image (their "
                       "saved test predictions are missing or cover other images).")
    change, p = row["test change vs transfer (points)"], row["McNemar p"]
    if row["vs transfer"] == "within noise":
        outcome = ("the same test accuracy as" if change == 0 else
                   f"{change:+.2f} points against") + " the transfer model, **within noise**"
    else:
        outcome = (f"{change:+.2f} points against the transfer model: fine-tuning "
                   f"**{'improved' if change > 0 else 'lowered'}** test accuracy, significant at 5 %")
    return (text + f", {outcome} (McNemar's exact test on the {_images(row)} paired test images, "
            f"{p_equals(p)}).")


def _change(row: pd.Series) -> str:
    if pd.isna(row["McNemar p"]):
        return f"{row['test accuracy (%)']:.2f} %, not compared"
    return (f"{row['test accuracy (%)']:.2f} % ({row['test change vs transfer (points)']:+.2f} "
            f"points, {p_equals(row['McNemar p'])}, {row['vs transfer']})")


def _images(row: pd.Series) -> str:
    return "-" if pd.isna(row["test images"]) else f"{int(row['test images']):,}"


def _with_ci(fraction: float, images: int) -> str:
    low, high = stats.accuracy_interval(fraction, images)
    return f"{_pct(fraction)} (95 % CI {100 * low:.1f}-{100 * high:.1f} %)"


def lr_suggestion_text(best_lr: float, suggested_lr: float) -> str:
    """Whether the best swept LR is near (within a factor of 3 of) the range test's suggestion."""
    ratio = best_lr / suggested_lr
    near = abs(math.log10(ratio)) <= math.log10(3)
    side = "above" if ratio > 1 else "below"
    return (f"The LR range test suggested lr={lr_label(suggested_lr)}; the best swept learning "
            f"rate, {lr_label(best_lr)}, is {'near' if near else 'not near'} it "
            + ("(the same value)." if ratio == 1 else f"({max(ratio, 1 / ratio):.3g} times {side})."))


def memory_text(stages: dict[str, dict[str, float]] | None) -> str:
    """What fine-tuning adds in memory: the exact optimizer state of its extra trainable
    parameters, and what was measured during training (`resources.stage_means`)."""
    if stages is None:
        return ("The memory of the two stages could not be compared (a stage was not measured, "
                "or the two were measured differently).")
    t, f = stages["transfer"], stages["finetune"]
    extra_params = f["trainable_params"] - t["trainable_params"]
    extra_state = f["optimizer_state_mb"] - t["optimizer_state_mb"]
    measured = f["training_memory_mb"] - t["training_memory_mb"]
    text = (f"Fine-tuning trains {f['trainable_params']:,.0f} parameters against transfer "
            f"learning's {t['trainable_params']:,.0f}; gradients and the optimizer's two moment "
            f"estimates (Adam or AdamW: 12 bytes per trained float32 weight) take "
            f"{f['optimizer_state_mb']:.2f} MB against {t['optimizer_state_mb']:.2f} MB "
            f"({extra_state:+.2f} MB, exact)" + _ema_text(f) + ". The training "
            f"itself was measured at {f['training_memory_mb']:.0f} MB for fine-tuning and "
            f"{t['training_memory_mb']:.0f} MB for transfer learning ({measured:+.0f} MB). ")
    if extra_params <= 0:
        return text + "Fine-tuning trains no more parameters here, so it needs no more state."
    if measured >= extra_state:
        return text + ("The measured increase covers the extra optimizer state; the rest is "
                       "mostly activations kept for the backward pass through the unfrozen layers.")
    if measured > 0:
        return text + ("The measured increase is smaller than the extra optimizer state alone: "
                       "this measurement does not resolve the difference (allocators reuse memory "
                       "freed earlier), so only the exact figure supports the claim.")
    return text + ("The measurement shows no increase although the optimizer state grows: it "
                   "does not resolve the difference on this device, so only the exact figure "
                   "supports the claim that fine-tuning needs more memory.")


def _ema_text(stage: dict[str, float]) -> str:
    ema = stage.get("ema_state_mb") or 0.0
    return (f"; the EMA's averaged copy of those weights adds {ema:.2f} MB (4 bytes a weight)"
            if ema > 0 else "")


def original_comparison(cfg: LabConfig, table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The original lab's TensorBoard runs next to this sweep's, and a generated sentence."""
    from lab5_utils.history import summarize_runs

    folder = project_root() / "references" / "original_lab5"
    original, problems = summarize_runs(sorted(folder.glob("*")))
    original.insert(0, "source", "original lab 5")
    mine, _ = summarize_runs(run_dirs(cfg, table))
    mine.insert(0, "source", "this project")
    both = pd.concat([original, mine], ignore_index=True)
    if original.empty:
        return both, f"The original lab's logs could not be read ({'; '.join(problems)})."
    is_transfer = original["run"].str.contains("augmentation")
    start = original.loc[is_transfer, "final_val_accuracy"].iloc[0]
    peak = original.loc[~is_transfer, "best_val_accuracy"].max()
    text = (f"The original lab went from {start:.2f} % (end of transfer learning) to at best "
            f"{peak:.2f} % after fine-tuning ({peak - start:+.2f} points).")
    best = best_finetune(table)
    transfer = table[table["run"] == "transfer"].iloc[0]
    if best is not None and transfer["status"] == "finished":
        change = best["val accuracy (%)"] - transfer["val accuracy (%)"]
        text += (f" This project's validation accuracy (the original reported no separate "
                 f"test split) went from {transfer['val accuracy (%)']:.2f} % to "
                 f"{best['val accuracy (%)']:.2f} % ({change:+.2f} points, "
                 f"{run_title(best)}); its test accuracies are above.")
    if cfg.weights != "imagenet":
        text += (f" This run used weights={cfg.weights!r} on the {cfg.dataset!r} dataset, not "
                 "ImageNet weights on Food-101: its numbers cannot be compared with the original's.")
    return both, text


def original_fixes(cfg: LabConfig, table: pd.DataFrame) -> str:
    """The original lab's four faults, each with what this report's runs did instead (Markdown
    bullets): the parts that depend on settings are read from `cfg` and the runs."""
    soft = [_soft_targets(read_json(d / "config.json")) for d in run_dirs(cfg, table)
            if (d / "config.json").is_file()] or [_soft_targets(cfg.to_dict())]
    labels = ("integers 0..C-1, turned into one-hot targets of depth C inside the pipeline for "
              "label smoothing or mixup/cutmix" if all(soft) else
              "integers 0..C-1 with a sparse cross-entropy: no one-hot encoding to get wrong"
              if not any(soft) else "integers 0..C-1: a sparse cross-entropy, or one-hot "
              "targets of depth C made from them in the runs with label smoothing or mixing")
    transfer = run_dirs(cfg, table[table["run"] == "transfer"])
    rule = read_json(transfer[0] / "metrics.json").get("split_rule") if transfer else None
    split = (f"the splits are fixed before training ({rule}), and the training split is "
             "reshuffled every epoch" if rule else "the transfer run was not found")
    done = finished_finetunes(table)
    swept = swept_setting(table)
    if done.empty:
        rates = "no fine-tuning run finished"
    elif swept is None:
        lrs = sorted(done["learning rate"])
        rates = ("this report fine-tunes at " + (f"lr={lr_label(lrs[0])}" if len(lrs) == 1 else
                 f"{len(lrs)} learning rates from {lr_label(lrs[-1])} down to {lr_label(lrs[0])}")
                 + ", with the configured schedule, and the report shows what each one moved")
    else:
        rates = (f"this report fine-tunes at lr={lr_label(done['learning rate'].iloc[0])} and "
                 f"varies {swept}; `lab5 report --lrs ...` sweeps learning rates")
    return "\n".join([
        "* **Double normalisation.** The original divided pixels by 255 (and normalised them) "
        "before Keras' EfficientNet, which rescales and normalises its input itself. Here the "
        "pixels enter the model as uint8 0..255 and are normalised once, by the model.",
        "* **Shifted labels.** The original turned labels into 1..101 and one-hot encoded them "
        f"with depth 101, so one class had an all-zero target. Here labels are {labels}.",
        "* **Unshuffled split.** The original cut its validation set from the training stream "
        f"with `take`/`skip` without shuffling first. Here {split}.",
        "* **Fine-tuning learning rates far too low.** With Adam, 1e-7 and 1e-8 move the "
        f"weights so little that fine-tuning could not change anything. Here {rates}; "
        "`--lrs auto` adds the LR range test's suggestion.",
    ])


def _soft_targets(config: dict) -> bool:
    """Whether a run's config (`config.json`) trained on one-hot targets."""
    return (config.get("label_smoothing") or 0) > 0 or bool(
        {"mixup", "cutmix"} & set(config.get("augmentations", [])))


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"

"""The report's generated text: every sentence is a function of the runs' numbers, worded by
what they show (a gain, a loss or noise), never typed by hand."""

from __future__ import annotations

import math
import re

import pandas as pd

from lab5_utils.config import LabConfig, lr_label
from lab5_utils.evaluate import stats
from lab5_utils.files import project_root, read_json
from lab5_utils.i18n import _, ngettext, num, pct
from lab5_utils.report.analysis import (
    best_finetune,
    choice_split,
    finished_finetunes,
    row_ci,
    run_dirs,
    run_title,
)
from lab5_utils.report.narrative_data import original_like_with_like, run_data
from lab5_utils.tables import clock, p_equals, split_rule_text, test_time_display


def describe_run(metrics: dict, baseline: dict | None = None) -> str:
    """A sentence or two on one finished run, compared with `baseline` when given."""
    seconds = metrics.get("seconds_per_epoch")
    text = _("Best validation accuracy **{best}** at epoch {epoch} (epochs {first}-{last}), the "
             "model kept; final {final_val} validation and {final_train} training accuracy; "
             "{params} trainable parameters; {seconds} per epoch.").format(
        best=pct(100 * metrics["best_val_accuracy"]), epoch=metrics["best_epoch"],
        first=metrics["first_epoch"], last=metrics["last_epoch"],
        final_val=pct(100 * metrics["final_val_accuracy"]),
        final_train=pct(100 * metrics["final_accuracy"]), params=num(metrics["trainable_params"], ","),
        seconds="-" if seconds is None else _("{seconds} s").format(seconds=num(seconds, ".1f")))
    at_test_time = metrics.get("test_time_val_accuracy")
    if at_test_time is not None and at_test_time != metrics["best_val_accuracy"]:
        text += " " + _("Measured as the test split is ({settings}), its validation accuracy is "
                        "{val}.").format(settings=test_time_display(metrics.get("test_time")),
                                         val=pct(100 * at_test_time))
    if "test_accuracy" in metrics:
        n = metrics["num_test"]
        text += " " + ngettext(
            "The kept model's test accuracy: {test} on {n} test image (measured once; it chose "
            "nothing).",
            "The kept model's test accuracy: {test} on {n} test images (measured once; it chose "
            "nothing).", n).format(test=_with_ci(metrics["test_accuracy"], n), n=num(n, ","))
    if baseline:
        change = 100 * (metrics["best_val_accuracy"] - baseline["best_val_accuracy"])
        text += " " + _("The transfer model it starts from reached {val} validation accuracy: "
                        "fine-tuning at lr={lr} changed it by {change} points (part 4 tests the "
                        "change on the test split).").format(
            val=pct(100 * baseline["best_val_accuracy"]), lr=lr_label(metrics["learning_rate"]),
            change=num(change, "+.2f"))
    return text


def conclusion(table: pd.DataFrame, suggested_lr: float | None = None) -> str:
    """The report's conclusion, generated from the results table (Markdown): the run is chosen
    on validation; the verdict is its test accuracy against the transfer model's and, in a
    sweep of a setting, each value's against the first value's."""
    transfer = table[table["run"] == "transfer"].iloc[0]
    if transfer["status"] != "finished":
        return _("No finished transfer-learning run was found, so there is nothing to conclude yet.")
    parts = [_("Transfer learning (EfficientNet-B0 frozen, new head trained) kept its epoch "
               "{epoch} by validation accuracy ({val}); on the {images} test images that model "
               "reaches **{test}**.").format(epoch=int(transfer["best epoch"]),
                                             val=row_ci(transfer, "val"), images=_images(transfer),
                                             test=row_ci(transfer, "test"))]
    best = best_finetune(table)
    done = finished_finetunes(table)
    swept = swept_setting(table)
    n = len(done)
    what = (ngettext("{n} learning rate", "{n} learning rates", n) if swept is None else
            ngettext("{n} value of {setting}", "{n} values of {setting}", n)).format(
        n=n, setting=swept)
    if best is None:
        parts.append(_("No fine-tuning run finished."))
    else:
        split = choice_split(done)
        parts.append(_("Chosen on validation, fine-tuning at **{run}** had the best validation "
                       "accuracy of the {what} that finished ({val}{settings} at epoch "
                       "{epoch}).").format(
            run=run_title(best), what=what, val=row_ci(best, split),
            settings=_(" with {settings},").format(
                settings=test_time_display(best["test-time settings"]))
            if split != "val" and best["test-time val accuracy (%)"] != best["val accuracy (%)"]
            else "", epoch=int(best["best epoch"]))
            + " " + _verdict_sentence(best))
        close = [r for _r, r in done.iterrows() if r["run"] != best["run"]
                 and r[f"{split} accuracy (%)"] >= best[f"{split} low (%)"]]
        if close:
            parts.append(_("Validation does not separate it clearly from {runs}: their validation "
                           "accuracies lie inside its 95 % interval.").format(
                runs=", ".join(f"{r['setting']} ({pct(r[f'{split} accuracy (%)'])})"
                               for r in close)))
        others = [f"{r['setting']}: {_change(r)}" for _r, r in done.iterrows()
                  if r["run"] != best["run"]]
        if others:
            parts.append((_("The other learning rates on the test split: {runs}.") if swept is None
                          else _("The other values on the test split: {runs}.")).format(
                runs="; ".join(others)))
        if swept is not None:
            parts.append(_against_first(done))
    finetune = table[table["run"] != "transfer"]
    for _r, r in finetune[finetune["status"] != "finished"].iterrows():
        error = str(r["error"] or "").strip()
        reason = error.splitlines()[0].rstrip(".") if error else _("no finished run was found")
        parts.append(_("{run} {status}: {reason}.").format(run=r["setting"], status=_(r["status"]),
                                                            reason=reason))
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
    rows = [r for _r, r in done.iloc[1:].iterrows()]
    if not rows:
        return ""
    items = [_("{run} not compared").format(run=r["setting"]) if pd.isna(r["McNemar p vs first"])
             else _("{run} {change} points ({p}, {verdict})").format(
                 run=r["setting"], change=num(r["test change vs first (points)"], "+.2f"),
                 p=p_equals(r["McNemar p vs first"]), verdict=_(r["vs first"])) for r in rows]
    return _("Against the first value, {first}, on the same test images (McNemar's exact test): "
             "{runs}.").format(first=first["setting"], runs="; ".join(items))


def headline(table: pd.DataFrame) -> str:
    """The report's first lines (Markdown): the run validation chose, its test accuracy with its
    interval, the change against transfer learning with its verdict, and the sweep's cost."""
    transfer = table[table["run"] == "transfer"].iloc[0]
    best = best_finetune(table)
    if transfer["status"] != "finished":
        return _("**No result yet:** the transfer-learning run did not finish.")
    if best is None:
        lines = [_("**No fine-tuning run finished.** Transfer learning reaches **{test}** on "
                   "{images} test images.").format(test=row_ci(transfer, "test"),
                                                   images=_images(transfer))]
    else:
        lines = [_("**Validation chose fine-tuning at {run}.** On {images} test images it reaches "
                   "**{test}**;").format(run=run_title(best), images=_images(best),
                                         test=row_ci(best, "test"))
                 + " " + _short_verdict(best, transfer)]
    cost = sweep_cost(table)
    if cost:
        lines.append(cost)
    return "\n\n".join(lines)


def _short_verdict(best: pd.Series, transfer: pd.Series) -> str:
    base = pct(transfer["test accuracy (%)"])
    if pd.isna(best["McNemar p"]):
        return _("transfer learning reaches {test} (not compared image by image: saved test "
                 "predictions are missing).").format(test=base)
    change = best["test change vs transfer (points)"]
    noise = best["vs transfer"] == "within noise"
    word = (_("within noise") if noise else
            _("a significant gain") if change > 0 else _("a significant loss"))
    return _("{change} points against transfer learning ({test}): **{verdict}** (McNemar "
             "{p}).").format(change=num(change, "+.2f"), test=base, verdict=word,
                             p=p_equals(best["McNemar p"]))


def sweep_cost(table: pd.DataFrame) -> str:
    """`Training time: 5 runs, 6:12 on the CPU.` from the finished runs' `wall time (s)`."""
    done = table[(table["status"] == "finished") & table["wall time (s)"].notna()]
    if done.empty:
        return ""
    kinds = done["device"].fillna("").map(_device_kind)
    spent = [_("{time} on the {device}").format(
        time=clock(done.loc[kinds == k, "wall time (s)"].sum()), device=k) for k in sorted(set(kinds))]
    runs = ngettext("{n} run", "{n} runs", len(done)).format(n=len(done))
    return _("Training time: {runs}, {spent} (fit only: tracing, evaluation and notebooks not "
             "counted).").format(runs=runs, spent=_(" and ").join(spent))


def _device_kind(device: str) -> str:
    """"GPU", "TPU" or "CPU" from metrics.json's `device` line ("device: GPU (Tesla T4); ...")."""
    found = re.match(r"device: (GPU|TPU)", device)
    return found.group(1) if found else "CPU"


def _verdict_sentence(row: pd.Series) -> str:
    """What the chosen run's test accuracy says against the transfer model's."""
    if pd.isna(row["test accuracy (%)"]):
        return _("It has no test measurement, so there is no verdict.")
    text = _("On the test split it reaches **{test}**").format(test=row_ci(row, "test"))
    if pd.isna(row["McNemar p"]):
        return text + _("; it cannot be compared with the transfer model image by image (their "
                        "saved test predictions are missing or cover other images).")
    change, p = row["test change vs transfer (points)"], row["McNemar p"]
    if row["vs transfer"] == "within noise":
        outcome = (_("the same test accuracy as the transfer model, **within noise**")
                   if change == 0 else
                   _("{change} points against the transfer model, **within noise**").format(
                       change=num(change, "+.2f")))
    elif change > 0:
        outcome = _("{change} points against the transfer model: fine-tuning **improved** test "
                    "accuracy, significant at 5 %").format(change=num(change, "+.2f"))
    else:
        outcome = _("{change} points against the transfer model: fine-tuning **lowered** test "
                    "accuracy, significant at 5 %").format(change=num(change, "+.2f"))
    return text + ", " + _("{outcome} (McNemar's exact test on the {images} paired test images, "
                           "{p}).").format(outcome=outcome, images=_images(row), p=p_equals(p))


def _change(row: pd.Series) -> str:
    if pd.isna(row["McNemar p"]):
        return _("{test}, not compared").format(test=pct(row["test accuracy (%)"]))
    return _("{test} ({change} points, {p}, {verdict})").format(
        test=pct(row["test accuracy (%)"]), change=num(row["test change vs transfer (points)"], "+.2f"),
        p=p_equals(row["McNemar p"]), verdict=_(row["vs transfer"]))


def _images(row: pd.Series) -> str:
    return "-" if pd.isna(row["test images"]) else num(int(row["test images"]), ",")


def _with_ci(fraction: float, images: int) -> str:
    low, high = stats.accuracy_interval(fraction, images)
    return _("{value} (95 % CI {low}-{high} %)").format(
        value=pct(100 * fraction), low=num(100 * low, ".1f"), high=num(100 * high, ".1f"))


def lr_suggestion_text(best_lr: float, suggested_lr: float) -> str:
    """Whether the best swept LR is near (within a factor of 3 of) the range test's suggestion."""
    ratio = best_lr / suggested_lr
    near = abs(math.log10(ratio)) <= math.log10(3)
    factor = num(max(ratio, 1 / ratio), ".3g")
    where = (_("(the same value).") if ratio == 1 else
             _("({factor} times above).") if ratio > 1 else _("({factor} times below)."))
    return (_("The LR range test suggested lr={suggested}; the best swept learning rate, {best}, "
              "is near it") if near else
            _("The LR range test suggested lr={suggested}; the best swept learning rate, {best}, "
              "is not near it")).format(suggested=lr_label(suggested_lr), best=lr_label(best_lr)
                                        ) + " " + where.format(factor=factor)


def memory_text(stages: dict[str, dict[str, float]] | None) -> str:
    """What fine-tuning adds in memory: the exact optimizer state of its extra trainable
    parameters, and what was measured during training (`resources.stage_means`)."""
    if stages is None:
        return _("The memory of the two stages could not be compared (a stage was not measured, "
                 "or the two were measured differently).")
    t, f = stages["transfer"], stages["finetune"]
    extra_params = f["trainable_params"] - t["trainable_params"]
    extra_state = f["optimizer_state_mb"] - t["optimizer_state_mb"]
    measured = f["training_memory_mb"] - t["training_memory_mb"]
    text = _("Fine-tuning trains {params} parameters against transfer learning's {base_params}; "
             "gradients and the optimizer's two moment estimates (Adam or AdamW: 12 bytes per "
             "trained float32 weight) take {state} MB against {base_state} MB ({extra} MB, "
             "exact)").format(
        params=num(f["trainable_params"], ",.0f"), base_params=num(t["trainable_params"], ",.0f"),
        state=num(f["optimizer_state_mb"]), base_state=num(t["optimizer_state_mb"]),
        extra=num(extra_state, "+.2f"))
    text += _ema_text(f) + ". " + _(
        "The training itself was measured at {tuned} MB for fine-tuning and {base} MB for "
        "transfer learning ({change} MB).").format(
        tuned=num(f["training_memory_mb"], ".0f"), base=num(t["training_memory_mb"], ".0f"),
        change=num(measured, "+.0f")) + " "
    if extra_params <= 0:
        return text + _("Fine-tuning trains no more parameters here, so it needs no more state.")
    if measured >= extra_state:
        return text + _("The measured increase covers the extra optimizer state; the rest is "
                        "mostly activations kept for the backward pass through the unfrozen layers.")
    if measured > 0:
        return text + _("The measured increase is smaller than the extra optimizer state alone: "
                        "this measurement does not resolve the difference (allocators reuse memory "
                        "freed earlier), so only the exact figure supports the claim.")
    return text + _("The measurement shows no increase although the optimizer state grows: it "
                    "does not resolve the difference on this device, so only the exact figure "
                    "supports the claim that fine-tuning needs more memory.")


def _ema_text(stage: dict[str, float]) -> str:
    ema = stage.get("ema_state_mb") or 0.0
    return (_("; the EMA's averaged copy of those weights adds {ema} MB (4 bytes a weight)").format(
        ema=num(ema)) if ema > 0 else "")


def original_comparison(cfg: LabConfig, table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The original lab's TensorBoard runs next to this sweep's, and a generated sentence."""
    from lab5_utils.train.epoch_logs import summarize_runs

    folder = project_root() / "references" / "original_lab5"
    original, problems = summarize_runs(sorted(folder.glob("*")))
    original.insert(0, "source", _("original lab 5"))
    mine, _problems = summarize_runs(run_dirs(cfg, table))
    mine.insert(0, "source", _("this project"))
    both = pd.concat([original, mine], ignore_index=True)
    if original.empty:
        return both, _("The original lab's logs could not be read ({problems}).").format(
            problems="; ".join(problems))
    is_transfer = original["run"].str.contains("augmentation")
    start = original.loc[is_transfer, "final_val_accuracy"].iloc[0]
    peak = original.loc[~is_transfer, "best_val_accuracy"].max()
    text = _("The original lab went from {start} (end of transfer learning) to at best {peak} "
             "after fine-tuning ({change} points).").format(
        start=pct(start), peak=pct(peak), change=num(peak - start, "+.2f"))
    best = best_finetune(table)
    transfer = table[table["run"] == "transfer"].iloc[0]
    used = run_data(cfg, table)
    if best is not None and transfer["status"] == "finished":
        change = best["val accuracy (%)"] - transfer["val accuracy (%)"]
        text += " " + _("This project's validation accuracy (the original reported no separate "
                        "test split) went from {start} to {end} ({change} points, {run}); its "
                        "test accuracies are above.").format(
            start=pct(transfer["val accuracy (%)"]), end=pct(best["val accuracy (%)"]),
            change=num(change, "+.2f"), run=run_title(best))
    return both, text + original_like_with_like(cfg.weights, used and used["source"],
                                                bool(used and used["official_test"]))


def original_fixes(cfg: LabConfig, table: pd.DataFrame) -> str:
    """The original lab's four faults, each with what this report's runs did instead (Markdown
    bullets): the parts that depend on settings are read from `cfg` and the runs."""
    soft = [_soft_targets(read_json(d / "config.json")) for d in run_dirs(cfg, table)
            if (d / "config.json").is_file()] or [_soft_targets(cfg.to_dict())]
    labels = (_("integers 0..C-1, turned into one-hot targets of depth C inside the pipeline for "
                "label smoothing or mixup/cutmix") if all(soft) else
              _("integers 0..C-1 with a sparse cross-entropy: no one-hot encoding to get wrong")
              if not any(soft) else _("integers 0..C-1: a sparse cross-entropy, or one-hot "
                                      "targets of depth C made from them in the runs with label "
                                      "smoothing or mixing"))
    used = run_data(cfg, table)
    rule = used["rule"] if used else None
    split = (_("the splits are fixed before training ({rule}), and the training split is "
               "reshuffled every epoch").format(rule=split_rule_text(rule)) if rule
             else _("the transfer run was not found"))
    done = finished_finetunes(table)
    swept = swept_setting(table)
    if done.empty:
        rates = _("no fine-tuning run finished")
    elif swept is None:
        lrs = sorted(done["learning rate"])
        rates = (_("this report fine-tunes at lr={lr}, with the configured schedule, and the "
                   "report shows what each one moved").format(lr=lr_label(lrs[0]))
                 if len(lrs) == 1 else
                 _("this report fine-tunes at {n} learning rates from {high} down to {low}, with "
                   "the configured schedule, and the report shows what each one moved").format(
                     n=len(lrs), high=lr_label(lrs[-1]), low=lr_label(lrs[0])))
    else:
        rates = _("this report fine-tunes at lr={lr} and varies {setting}; `lab5 report --lrs ...` "
                  "sweeps learning rates").format(lr=lr_label(done["learning rate"].iloc[0]),
                                                  setting=swept)
    return "\n".join([
        "* " + _("**Double normalisation.** The original divided pixels by 255 (and normalised "
                 "them) before Keras' EfficientNet, which rescales and normalises its input "
                 "itself. Here the pixels enter the model as uint8 0..255 and are normalised "
                 "once, by the model."),
        "* " + _("**Shifted labels.** The original turned labels into 1..101 and one-hot "
                 "encoded them with depth 101, so one class had an all-zero target. Here labels "
                 "are {labels}.").format(labels=labels),
        "* " + _("**Unshuffled split.** The original cut its validation set from the training "
                 "stream with `take`/`skip` without shuffling first. Here {split}.").format(
            split=split),
        "* " + _("**Fine-tuning learning rates far too low.** With Adam, 1e-7 and 1e-8 move the "
                 "weights so little that fine-tuning could not change anything. Here {rates}; "
                 "`--lrs auto` adds the LR range test's suggestion.").format(rates=rates),
    ])


def _soft_targets(config: dict) -> bool:
    """Whether a run's config (`config.json`) trained on one-hot targets."""
    return (config.get("label_smoothing") or 0) > 0 or bool(
        {"mixup", "cutmix"} & set(config.get("augmentations", [])))

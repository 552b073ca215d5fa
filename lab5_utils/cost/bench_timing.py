"""Timing a benchmark's measurements: one pass of a dataset by wall clock and CPU time, rounds
that run every variant back to back, and their medians and paired ratios (`bench`,
`bench_augment`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

Timing = tuple[int, float, float]  # images, wall seconds, process CPU seconds


def timed(run: Callable[[], int]) -> Timing:
    """Run `run` (it returns how many images it processed); time it by wall clock and CPU."""
    wall, cpu = time.perf_counter(), time.process_time()
    images = run()
    return images, time.perf_counter() - wall, time.process_time() - cpu


def steady_pass(ds) -> Timing:
    """One pass over a batched (images, labels) dataset, timed from its second batch on.
    Iterator start-up (function instantiation, shuffle-buffer fill) is a fixed cost per epoch:
    negligible over Food-101's 75,750 training images, not over a few hundred."""
    iterator = iter(ds)
    next(iterator)
    return timed(lambda: sum(int(images.shape[0]) for images, _ in iterator))


def full_pass(ds) -> Timing:
    """One pass over a batched dataset, start-up included."""
    return timed(lambda: sum(int(images.shape[0]) for images, _ in ds))


def interleaved(runs: dict[str, Callable[[], Timing]], repeats: int) -> dict[str, list[Timing]]:
    """Each measurement once as warm-up, then `repeats` rounds running all of them in turn."""
    for run in runs.values():
        run()
    results: dict[str, list[Timing]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            results[name].append(run())
    return results


def summary(timings: list[Timing]) -> dict[str, Any]:
    """Median images/s (wall clock), every run's images/s, and median CPU ms per image (all
    threads of this process: less sensitive than images/s to other programs' load)."""
    rates = [n / wall for n, wall, _ in timings]
    return {"median": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates],
            "cpu_ms_per_image": round(statistics.median(1e3 * cpu / n for n, _, cpu in timings), 3)}


def paired_ratio(runs: list[Timing], baseline: list[Timing]) -> float:
    """Median over rounds of (images/s of `runs`) / (images/s of `baseline` in the same round):
    the two ran back to back, so a slow spell of a shared machine mostly cancels out."""
    rates = [(n / wall) / (n0 / wall0) for (n, wall, _), (n0, wall0, _) in zip(runs, baseline)]
    return round(statistics.median(rates), 3)


def rate_line(measured: dict[str, Any]) -> str:
    """`summary` as text: median images/s, CPU ms an image, every run."""
    runs = ", ".join(f"{v:.0f}" for v in measured["runs"])
    return (f"{measured['median']:7.0f} images/s ({measured['cpu_ms_per_image']:.2f} CPU "
            f"ms/image; runs {runs})")

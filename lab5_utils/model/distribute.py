"""Choosing and entering the `tf.distribute` strategy a run uses: the one place that creates one.

`distribution` (a `LabConfig` field) picks it: `auto` (a TPU when one is attached, else
`MirroredStrategy` over all GPUs when there are 2 or more, else TensorFlow's default strategy:
one device), `none` (the default strategy), `mirrored` (all GPUs of this machine), `tpu` (an
error when no TPU is attached) and `multiworker`, which stops with the reason (Keras 3's `fit`
does not work with `MultiWorkerMirroredStrategy`; see `MULTIWORKER_REFUSAL`).

`batch_size` stays the *global* batch: Keras splits every batch over the replicas, so the number
of steps per epoch does not depend on the number of devices, and it must divide evenly.

`LAB5_TEST_CPU_REPLICAS=N` (test-only, documented here and in the README): on a machine without
GPUs, split the CPU into N logical devices before TensorFlow initialises them and let `auto` and
`mirrored` mirror over them. It exists so the tests exercise `MirroredStrategy` on a CPU; it
makes nothing faster.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from lab5_utils.config import LabConfig

TEST_CPU_REPLICAS = "LAB5_TEST_CPU_REPLICAS"

MULTIWORKER_REFUSAL = (
    "distribution='multiworker' is not supported: Keras 3's Model.fit fails with "
    "tf.distribute.MultiWorkerMirroredStrategy (\"Attempt to convert a value (PerReplica...) "
    "... to a Tensor\" when fit starts, then \"Invalid reduction dimension 0 for input with 0 "
    "dimensions\" in the train step; keras-team/keras#20585, tensorflow/tensorflow#72388; "
    "reproduced with TensorFlow {tf} / Keras {keras} on two local workers). Train on one "
    "machine instead: --set distribution=mirrored uses all of its GPUs (the default "
    "distribution=auto does so too when it has 2 or more)."
)

_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


class DistributionError(ValueError):
    """The strategy asked for cannot be used here; the message says what to do instead."""


def strategy(cfg: LabConfig) -> tf.distribute.Strategy:
    """The strategy `cfg.distribution` asks for, created once per process (a TPU is connected
    and initialised only once; a model must be used under the strategy it was built in)."""
    key = (cfg.distribution, os.environ.get(TEST_CPU_REPLICAS, ""))
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _create(cfg.distribution)
    return _STRATEGIES[key]


def replicas(chosen: tf.distribute.Strategy | None = None) -> int:
    return int((chosen or tf.distribute.get_strategy()).num_replicas_in_sync)


def strategy_name(chosen: tf.distribute.Strategy | None = None) -> str:
    """`MirroredStrategy`, `TPUStrategy`; `_DefaultDistributionStrategy` reads as `default`."""
    name = type(chosen or tf.distribute.get_strategy()).__name__
    return "default" if name.startswith("_Default") else name


def describe(chosen: tf.distribute.Strategy | None = None) -> str:
    """`MirroredStrategy, 2 replicas (GPU:0, GPU:1)` or `default strategy, 1 replica`."""
    chosen = chosen or tf.distribute.get_strategy()
    n = replicas(chosen)
    name = strategy_name(chosen)
    text = f"{'default strategy' if name == 'default' else name}, {n} replica{'s' * (n != 1)}"
    if n > 1 and not is_tpu(chosen):  # a TPU's cores are many and all alike
        devices = chosen.extended.worker_devices
        text += " (" + ", ".join(d.split("device:")[-1] for d in devices) + ")"
    return text


def is_tpu(chosen: tf.distribute.Strategy | None = None) -> bool:
    return isinstance(chosen or tf.distribute.get_strategy(), tf.distribute.TPUStrategy)


def precision_policy(cfg: LabConfig, chosen: tf.distribute.Strategy | None = None) -> str:
    """The Keras dtype policy: `mixed_bfloat16` on a TPU (its native format), `mixed_float16`
    on GPUs, `float32` otherwise; `mixed_precision=on` forces the mixed one, `off` float32."""
    if cfg.mixed_precision == "off":
        return "float32"
    if is_tpu(chosen):
        return "mixed_bfloat16"
    gpus = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if cfg.mixed_precision == "on" or gpus else "float32"


def check_batch_size(batch_size: int, num_replicas: int) -> None:
    """The global batch must split evenly over the replicas; the error names the nearest
    values that do."""
    if num_replicas <= 1 or batch_size % num_replicas == 0:
        return
    below = batch_size // num_replicas * num_replicas
    nearest = [v for v in (below, below + num_replicas) if v > 0]
    raise DistributionError(
        f"batch_size={batch_size} does not split evenly over the {num_replicas} replicas of "
        f"this run (batch_size is the global batch: each replica gets batch_size / "
        f"{num_replicas} images). Use a multiple of {num_replicas}, e.g. --set batch_size="
        + " or --set batch_size=".join(map(str, nearest)) + "."
    )


def predict_batches(model, dataset: Iterable) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`(images, labels, probabilities)` per batch of `dataset`, in order, from
    `model(x, training=False)` run on every replica of the current strategy (the batch is split
    between them). The forward pass is traced once, whatever the size of the last batch."""
    chosen = tf.distribute.get_strategy()
    if replicas(chosen) == 1:
        forward = None
        for batch in dataset:
            x, y = batch[0], batch[1]
            if forward is None:  # traced once for any batch size: predict_on_batch traces again
                spec = tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype))
                forward = tf.function(lambda t: model(t, training=False), input_signature=[spec])
            yield np.asarray(x), np.asarray(y), np.asarray(forward(x), np.float32)
        return

    distributed = chosen.experimental_distribute_dataset(dataset)

    @tf.function(input_signature=[distributed.element_spec[0]])
    def forward(x):  # each replica predicts its part; gather puts them back in batch order
        return chosen.gather(chosen.run(lambda t: model(t, training=False), args=(x,)), axis=0)

    for batch in distributed:
        x, y = batch[0], batch[1]
        yield _local(x), _local(y), np.asarray(forward(x), np.float32)


def _local(value) -> np.ndarray:
    """The replicas' parts of one batch, concatenated in replica order (= batch order)."""
    parts = tf.distribute.get_strategy().experimental_local_results(value)
    return np.concatenate([np.asarray(p) for p in parts])


# --- creating strategies -----------------------------------------------------------------------
def _create(distribution: str) -> tf.distribute.Strategy:
    if distribution == "multiworker":
        import keras

        raise DistributionError(MULTIWORKER_REFUSAL.format(tf=tf.__version__, keras=keras.__version__))
    if distribution == "none":
        return tf.distribute.get_strategy()
    if distribution == "tpu":
        return _tpu_strategy()
    if distribution == "auto" and _tpu_attached():
        try:
            return _tpu_strategy()
        except DistributionError as err:  # a sign of a TPU, but none usable: train without
            warnings.warn(f"distribution='auto' found signs of a TPU but {err}", stacklevel=3)
    gpus = tf.config.list_physical_devices("GPU")
    cpus = _test_cpu_devices() if not gpus else []
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy(devices=cpus or None)
    if len(gpus) >= 2:
        return tf.distribute.MirroredStrategy()
    if len(cpus) >= 2:
        return tf.distribute.MirroredStrategy(devices=cpus)
    return tf.distribute.get_strategy()


def _test_cpu_devices() -> list[str]:
    """Logical CPU devices for `LAB5_TEST_CPU_REPLICAS` (test-only); [] when it is not set."""
    raw = os.environ.get(TEST_CPU_REPLICAS, "")
    if not raw:
        return []
    if not raw.isdigit() or int(raw) < 1:
        raise DistributionError(f"{TEST_CPU_REPLICAS}={raw!r} is not valid: expected an integer >= 1.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(raw))
    except RuntimeError:  # already initialised: fine if it was split the same way before
        if len(tf.config.list_logical_devices("CPU")) != int(raw):
            raise DistributionError(
                f"{TEST_CPU_REPLICAS}={raw} must be set before TensorFlow initialises its "
                "devices (start a new process with it set).") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _tpu_attached() -> bool:
    """Signs of a TPU without touching the network: TPU devices TensorFlow already lists, the
    variables Colab, Kaggle and Cloud TPU VMs set, or a local TPU device file."""
    if tf.config.list_physical_devices("TPU"):
        return True
    if any(os.environ.get(v) for v in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")):
        return True
    return Path("/dev/accel0").exists()


def _tpu_strategy() -> tf.distribute.Strategy:
    """TPUStrategy on the attached TPU. Current Colab and Kaggle TPU runtimes are TPU VMs: the
    TPU is local (`tpu="local"`); an old Colab TPU node is reached through `COLAB_TPU_ADDR`."""
    if not _tpu_attached():
        raise DistributionError(
            "distribution='tpu' but no TPU is attached to this machine (TensorFlow lists no TPU "
            "device and TPU_NAME, COLAB_TPU_ADDR and /dev/accel0 are absent). On Colab or Kaggle "
            "choose a TPU runtime/accelerator first, or use --set distribution=auto."
        )
    address = os.environ.get("COLAB_TPU_ADDR")
    name = f"grpc://{address}" if address else os.environ.get("TPU_NAME") or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise DistributionError(
            f"the TPU ({name!r}) could not be initialised: {type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}. A TensorFlow "
            "built for TPUs must be installed (Colab and Kaggle TPU images have one); "
            "--set distribution=none trains on the CPU instead."
        ) from err
    return tf.distribute.TPUStrategy(resolver)

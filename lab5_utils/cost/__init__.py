"""What a run costs and how fast it goes: `lab5 bench` (`bench`: the input pipeline and `fit`;
`bench_step`: the train step; `bench_augment`: each `augment_on` placement with its verdict;
`bench_timing`: rounds and medians), the preflight hardware check and time estimate
(`estimate`), XLA / steps per execution and `augment_on=auto`, chosen by measuring (`speed`),
memory and time per run (`resources`).

May import: `evaluate`, `data`, `model` and the top modules; never `train` (training asks `speed`
and `resources`, so cost sits below it).
"""

from lab5_utils import hand_on

__getattr__, __all__ = hand_on(
    __name__,
    estimate="preflight",
    resources="resource_table stage_means",
)

"""Prometheus metrics of a running study, exported by Ray's metrics agent on each node.

Ray prefixes application metrics with ``ray_``, so Prometheus sees ``ray_kd_search_*``.
The Grafana dashboard ``dashboards/grafana/kd-search-cluster.json`` reads these names
beside Ray's own node metrics. Both classes need a connected Ray (driver or worker).
"""

from __future__ import annotations

import torch

TRIALS = "kd_search_trials"
TRIAL_EPOCH = "kd_search_trial_epoch"
TRIAL_GPU_MEMORY = "kd_search_trial_gpu_memory_bytes"
TRIAL_GPU_UTILIZATION = "kd_search_trial_gpu_utilization_percent"
STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL")


class StudyGauges:
    """The driver's view: how many trials of the study are in each state.

    Example:
        >>> StudyGauges("demo").set_counts({"RUNNING": 2, "COMPLETE": 5})  # doctest: +SKIP
    """

    def __init__(self, study: str):
        from ray.util.metrics import Gauge

        self.study = study
        self._trials = Gauge(TRIALS, description="Trials of a kd-search study, by state", tag_keys=("study", "state"))

    def set_counts(self, counts: dict[str, int]) -> None:
        for state in STATES:  # zeros too, so a finished state's line drops instead of freezing
            self._trials.set(counts.get(state, 0), tags={"study": self.study, "state": state})


class TrialGauges:
    """A worker's view of its trial: the epoch reached and, on a GPU, its memory and load.

    Example:
        >>> TrialGauges("demo", 3).record(epoch=1)  # doctest: +SKIP
    """

    def __init__(self, study: str, trial: int | str):
        from ray.util.metrics import Gauge

        self.tags = {"study": study, "trial": str(trial)}
        keys = ("study", "trial")
        self._epoch = Gauge(TRIAL_EPOCH, description="Epochs a kd-search trial has finished", tag_keys=keys)
        self._memory = Gauge(TRIAL_GPU_MEMORY, description="Peak GPU memory a trial allocated", tag_keys=keys)
        self._utilization = Gauge(TRIAL_GPU_UTILIZATION, description="GPU utilisation of a trial's device",
                                  tag_keys=keys)
        if torch.cuda.is_available():  # a reused worker process carries the last trial's peak
            torch.cuda.reset_peak_memory_stats()

    def record(self, epoch: int) -> None:
        # Once per epoch, never per step: these calls read the device and must stay off the hot loop.
        self._epoch.set(epoch, tags=self.tags)
        if torch.cuda.is_available():
            self._memory.set(torch.cuda.max_memory_allocated(), tags=self.tags)
            try:
                self._utilization.set(torch.cuda.utilization(), tags=self.tags)
            except (ModuleNotFoundError, RuntimeError):  # needs NVML (nvidia-ml-py), in the docker image
                pass

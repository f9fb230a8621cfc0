"""The names of the hyperparameter namespace (see :mod:`kd_search.engine.hyperparameters`):
the prediction losses, the stages and which layers each trains on, the searchable names.

They live apart from :mod:`kd_search.engine.hyperparameters` so that the study file
(:mod:`kd_search.engine.spec`) validates names without importing the module that reads
studies (no import cycle); :mod:`kd_search.engine.hyperparameters` re-exports them.

Example:
    >>> bool(SPACE_NAME.match("learning_rate_joint")), bool(SPACE_NAME.match("learning_rate"))
    (True, False)
"""

from __future__ import annotations

import re

from kd_search.engine.structure_catalog import STRUCTURE_LOSSES

# The prediction-layer losses by name (the losses themselves: kd_search.engine.losses.PREDICTION_LOSSES).
PREDICTION_LOSS_NAMES = ("soft_ce", "kl")
# Stages that train on the teacher's intermediate layers, and those on its predictions.
INTERMEDIATE_STAGES = ("intermediate", "joint")
PREDICTION_STAGES = ("prediction", "joint")
STAGE_NAMES = ("intermediate", "prediction", "joint")
SPACE_NAME = re.compile(
    r"^(alpha|beta|gamma|temperature|weight_decay|prediction_loss|layer_weight(_[1-9][0-9]*)?"
    rf"|weight_({'|'.join(STRUCTURE_LOSSES)})"
    rf"|(learning_rate|epochs)_({'|'.join(STAGE_NAMES)}))$"
)
SPACE_NAMES_HELP = ("alpha, beta, gamma, temperature, weight_decay, prediction_loss, layer_weight, "
                    "layer_weight_<m>, learning_rate_<stage>, epochs_<stage>, weight_<structure loss>")

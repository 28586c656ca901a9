"""Self-Tuning Networks: tune regularisation hyperparameters within one training run.

STN (MacKay et al., ICLR 2019) and Delta-STN (Bae & Grosse, NeurIPS 2020). A model's
Linear/Conv2d/Embedding layers become hyperparameter-conditioned layers that approximate the best
response ``w*(lambda)``; :class:`StnTuner` alternates training steps on the weights (with perturbed
hyperparameters in the real regularisers) and validation steps on the hyperparameters.

Example:
    >>> import torch
    >>> from hptransfer.stn import HyperSpec, StnTuner, TensorBatches, make_task
    >>> task = make_task("classify")
    >>> tuner = StnTuner(task.make_model(), [HyperSpec("dropout", 0.1, 0.0, 0.9)], loss=task.loss)
    >>> result = tuner.fit(TensorBatches(*task.train, 32), TensorBatches(*task.val, 128), steps=4)
    >>> list(result.values)
    ['dropout']
"""

from hptransfer.stn.hyper import DEFAULT_TRANSFORMS, HyperParams, HyperSpec
from hptransfer.stn.layers import (
    HyperContext,
    StnConv2d,
    StnDropout,
    StnEmbedding,
    StnLayer,
    StnLinear,
    StnModel,
    to_stn,
)
from hptransfer.stn.tasks import Task, make_task, stn_tasks, train_fixed
from hptransfer.stn.tuner import (
    StnCheckpointError,
    StnConfig,
    StnDivergedError,
    StnInterrupted,
    StnResult,
    StnRunawayWarning,
    StnTuner,
    TensorBatches,
    load_checkpoint,
)

__all__ = [
    "DEFAULT_TRANSFORMS",
    "HyperContext",
    "HyperParams",
    "HyperSpec",
    "StnCheckpointError",
    "StnConfig",
    "StnConv2d",
    "StnDivergedError",
    "StnDropout",
    "StnEmbedding",
    "StnInterrupted",
    "StnLayer",
    "StnLinear",
    "StnModel",
    "StnResult",
    "StnRunawayWarning",
    "StnTuner",
    "Task",
    "TensorBatches",
    "load_checkpoint",
    "make_task",
    "stn_tasks",
    "to_stn",
    "train_fixed",
]

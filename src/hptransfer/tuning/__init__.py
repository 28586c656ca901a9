"""Optuna proxy studies in width-independent base units.

Tune base hyperparameters on a narrow proxy, store the rule and base width with the study, carry
the best trial to any width::

    import optuna
    from hptransfer.scaling import default_config
    from hptransfer.tuning import TransferObjective, open_study, best_plan, reporter

    def train(plan, trial):              # your loop: build the model at plan.width with plan's
        ...                              # per-class lr/wd/init; call reporter(trial)(step, loss)
        return val_loss

    study = open_study("proxy", default_config(), storage="sqlite:///hptransfer.db")
    study.optimize(TransferObjective(train, default_config(), width=256), n_trials=50)
    plan = best_plan(study, width=4096)  # per-class hyperparameters at width 4096

A built-in proxy or a ``MODULE:FACTORY`` model end to end, as ``hptransfer tune`` runs it::

    from hptransfer.tuning import tune
    result = tune("llama", width=64, trials=50, steps=300)   # result.best, result.plan, result.study

Nothing in this package imports torch at import time.
"""

from hptransfer.tuning.objective import (
    Diverged,
    TransferObjective,
    WidthLadder,
    reporter,
    transfer_objective,
)
from hptransfer.tuning.run import TuneResult, describe_space, load_space, tune
from hptransfer.tuning.space import TUNABLE, Range, SearchSpace, default_space
from hptransfer.tuning.storage import (
    DEFAULT_STORAGE,
    StorageError,
    make_storage,
    mask_url,
    normalize_url,
)
from hptransfer.tuning.study import (
    StudyMismatchError,
    load_study,
    open_study,
    study_config,
    study_info,
    study_space,
)
from hptransfer.tuning.transfer import (
    EmptyStudyError,
    best_config,
    best_plan,
    config_from_study,
    ranked_trials,
)

__all__ = [
    "DEFAULT_STORAGE",
    "TUNABLE",
    "Diverged",
    "EmptyStudyError",
    "Range",
    "SearchSpace",
    "StorageError",
    "StudyMismatchError",
    "TransferObjective",
    "TuneResult",
    "WidthLadder",
    "best_config",
    "best_plan",
    "config_from_study",
    "default_space",
    "describe_space",
    "load_space",
    "load_study",
    "make_storage",
    "mask_url",
    "normalize_url",
    "open_study",
    "ranked_trials",
    "reporter",
    "study_config",
    "study_info",
    "study_space",
    "transfer_objective",
    "tune",
]

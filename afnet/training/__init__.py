"""Training, evaluation and prediction: the paper's recipe, torchrun DDP, reports and figures.

Commands: ``afnet train``, ``afnet eval``, ``afnet predict``, ``afnet plot-log``,
``afnet make-demo-data``. From Python: :func:`train` (with :func:`resolve_config`),
:func:`evaluate`, :func:`predict` / :func:`predict_many`. Names load their module on first use,
so prediction does not need the training extras (PyYAML, tqdm).
"""

import importlib
from typing import Any

_WHERE = {
    "ConfigError": "afnet.training.config", "TrainConfig": "afnet.training.config",
    "resolve_config": "afnet.training.config",
    "EvalResult": "afnet.training.evaluate", "evaluate": "afnet.training.evaluate",
    # Prediction is an inference tool (it needs no training code); re-exported here for the README's names.
    "Prediction": "afnet.tools.predict", "predict": "afnet.tools.predict", "predict_many": "afnet.tools.predict",
    "TrainSummary": "afnet.training.trainer", "train": "afnet.training.trainer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'afnet.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

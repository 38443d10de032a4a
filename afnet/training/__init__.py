"""Training, evaluation and prediction: the paper's recipe, torchrun DDP, reports and figures.

Commands: ``afnet train``, ``afnet eval``, ``afnet predict``, ``afnet plot-log``,
``afnet make-demo-data``. From Python: :func:`train` (with :func:`resolve_config`),
:func:`evaluate`, :func:`predict` / :func:`predict_many`. Names load their module on first use,
so prediction does not need the training extras (PyYAML, tqdm).
"""

import importlib
from typing import Any

_WHERE = {
    "ConfigError": "config", "TrainConfig": "config", "resolve_config": "config",
    "EvalResult": "evaluate", "evaluate": "evaluate",
    "Prediction": "predict", "predict": "predict", "predict_many": "predict",
    "TrainSummary": "trainer", "train": "trainer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'afnet.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"afnet.training.{_WHERE[name]}"), name)

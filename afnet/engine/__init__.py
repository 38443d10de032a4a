"""The inference engine: one plan built from a model's description, one executor that runs it.

- :mod:`afnet.engine.folding`: BN folded into every convolution, fused epilogues;
- :mod:`afnet.engine.plan`: the plan built from a backbone description;
- :mod:`afnet.engine.selection`: which frames (cells) each focal block computes;
- :mod:`afnet.engine.executor`: select → gather → branch on K → scatter;
- :mod:`afnet.engine.budget`: the frame (and cell) budget, static counts;
- :mod:`afnet.engine.runtime`: the inference settings and the one engine forward;
- :mod:`afnet.engine.live`: the live model (:func:`create_model`), following its weights;
- :mod:`afnet.engine.freeze`: :func:`freeze`, the explicit inference form (a snapshot);
- :mod:`afnet.engine.context`, :mod:`afnet.engine.counters`, :mod:`afnet.engine.signature`:
  the settings of one pass, what it really ran, and when a plan is stale.
"""

from afnet.engine.context import ExecutionContext
from afnet.engine.counters import MacCounter, count_macs
from afnet.engine.freeze import FrozenTSN, freeze
from afnet.engine.live import LiveTSN, create_model
from afnet.engine.runtime import EXECUTIONS, InferenceSettings

__all__ = [
    "EXECUTIONS",
    "ExecutionContext",
    "FrozenTSN",
    "InferenceSettings",
    "LiveTSN",
    "MacCounter",
    "count_macs",
    "create_model",
    "freeze",
]

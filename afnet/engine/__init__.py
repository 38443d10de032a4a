"""The inference engine: one plan built from a model's description, one executor that runs it.

- :mod:`afnet.engine.folding`: BN folded into every convolution, fused epilogues;
- :mod:`afnet.engine.plan`: the plan built once from a backbone description, rebuilt when a
  weight changes;
- :mod:`afnet.engine.selection`: which frames each focal block computes;
- :mod:`afnet.engine.executor`: select → gather → branch on K → scatter;
- :mod:`afnet.engine.context`: the settings of one forward pass;
- :mod:`afnet.engine.counters`: what the plan really ran (MACs, calls, rows).

The plan and executor modules import the model description, so they are imported where used,
not here.
"""

from afnet.engine.context import ExecutionContext, GateDecision
from afnet.engine.counters import MacCounter, count_macs

__all__ = ["ExecutionContext", "GateDecision", "MacCounter", "count_macs"]

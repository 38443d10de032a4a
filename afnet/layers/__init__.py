"""Building blocks shared by every AF model: gates, fusion, fixed policies."""

from afnet.layers.fusion import AdditiveFusion, DynamicFusion
from afnet.layers.gumbel import gumbel_noise, hard_gumbel_softmax
from afnet.layers.navigation import Navigation
from afnet.layers.policies import POLICIES, FixedPolicy, fixed_policy_mask, num_kept

__all__ = [
    "AdditiveFusion",
    "DynamicFusion",
    "FixedPolicy",
    "Navigation",
    "POLICIES",
    "fixed_policy_mask",
    "gumbel_noise",
    "hard_gumbel_softmax",
    "num_kept",
]

"""Building blocks shared by every AF model: temporal and spatial gates, fusion, fixed policies."""

from afnet.layers.fusion import AdditiveFusion, DynamicFusion
from afnet.layers.gumbel import gumbel_noise, hard_gumbel_softmax
from afnet.layers.navigation import Navigation, temporal_gate
from afnet.layers.policies import POLICIES, FixedPolicy, fixed_policy_mask, num_kept
from afnet.layers.spatial import SPATIAL_POLICIES, SpatialNavigation, SpatialPolicy

__all__ = [
    "AdditiveFusion",
    "DynamicFusion",
    "FixedPolicy",
    "Navigation",
    "POLICIES",
    "SPATIAL_POLICIES",
    "SpatialNavigation",
    "SpatialPolicy",
    "fixed_policy_mask",
    "gumbel_noise",
    "hard_gumbel_softmax",
    "num_kept",
    "temporal_gate",
]

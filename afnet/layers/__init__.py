"""Building blocks shared by every AF model: temporal and spatial gates, fusion, fixed policies."""

from afnet.layers.fusion import FUSIONS, AdditiveFusion, DynamicFusion, check_fusion
from afnet.layers.gumbel import gumbel_noise, hard_gumbel_softmax
from afnet.layers.navigation import Navigation, temporal_gate
from afnet.layers.policies import POLICIES, FixedPolicy, fixed_policy_mask, num_kept
from afnet.layers.ranking import keep_largest
from afnet.layers.ratios import count_for_ratio, is_ratio
from afnet.layers.spatial import SPATIAL_POLICIES, SpatialNavigation, SpatialPolicy

__all__ = [
    "AdditiveFusion",
    "DynamicFusion",
    "FUSIONS",
    "FixedPolicy",
    "Navigation",
    "POLICIES",
    "SPATIAL_POLICIES",
    "SpatialNavigation",
    "SpatialPolicy",
    "check_fusion",
    "count_for_ratio",
    "fixed_policy_mask",
    "gumbel_noise",
    "hard_gumbel_softmax",
    "is_ratio",
    "keep_largest",
    "num_kept",
    "temporal_gate",
]

"""Per-op-class profile of AF-ResNet50 RT 0.25 eager sparse (1 x 8 x 224, fp32, 2 threads).
PYTHONPATH selects the code (a checkout of 92590ac for "before"); NO_PIN=1 leaves glibc's malloc
thresholds as the old command did. Prints ms per forward per op class; writes them to argv[1]."""
import collections
import json
import sys
import time

import afnet
import torch
from torch.profiler import ProfilerActivity, profile

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2"))); torch.set_flush_denormal(True)
torch.manual_seed(0)
import os

try:  # the afnet command pins glibc's thresholds; so does this profile where the code has it
    if os.environ.get("NO_PIN"): raise ImportError
    from afnet.tools.allocator import pin_malloc_thresholds
    print("malloc pinned:", pin_malloc_thresholds())
except ImportError:
    print("malloc pinned: no (old code)")
m = afnet.create_model("af_resnet50", num_classes=174, num_segments=8, policy="uniform", rt=0.25).eval()
with torch.no_grad():
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_var.uniform_(0.5, 2); mod.running_mean.normal_(0, 0.1); mod.weight.uniform_(0.5, 1.5); mod.bias.normal_(0, 0.1)
f = afnet.freeze(m) if hasattr(afnet, "freeze") else m
v = torch.randn(1, 8, 3, 224, 224)
def cls(name):
    n = name.lower()
    if "conv" in n or "linear" in n or "addmm" in n or n.endswith("::mm") or "matmul" in n: return "convolutions/linear"
    if "scatter" in n: return "scatter"
    if "gather" in n or "index_select" in n or "index" in n: return "gather/index"
    if "blend" in n or "upsample" in n or "interpolate" in n: return "blend/upsample"
    if "pool" in n or "mean" in n: return "pools"
    if any(k in n for k in ("add", "relu", "mul", "sigmoid", "clamp", "where", "sub")): return "elementwise"
    if any(k in n for k in ("copy", "clone", "contiguous", "cat", "empty", "fill", "zero", "stack", "to_")): return "copies/alloc"
    return "other"
N = 5
with torch.inference_mode():
    for _ in range(3): f(v)
    ts = []
    for _ in range(9):
        t = time.perf_counter(); f(v); ts.append(time.perf_counter() - t)
    ts.sort(); med = ts[len(ts) // 2] * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(N): f(v)
agg = collections.Counter(); names = collections.defaultdict(collections.Counter)
for e in prof.key_averages():
    if e.key.startswith("ProfilerStep") or e.key in ("forward",): continue
    c = cls(e.key); agg[c] += e.self_cpu_time_total / 1e3 / N; names[c][e.key] += e.self_cpu_time_total / 1e3 / N
prof_total = sum(agg.values())
print(f"median forward {med:.1f} ms (9 runs); profiled ops sum {prof_total:.1f} ms/forward")
out = {"median_ms": med, "classes": {}}
for c, ms in agg.most_common():
    top = ", ".join(f"{k} {v:.1f}" for k, v in names[c].most_common(4))
    print(f"{c:22s} {ms:7.1f} ms {100*ms/prof_total:5.1f}%   [{top}]")
    out["classes"][c] = {"ms": ms, "top": dict(names[c].most_common(6))}
if len(sys.argv) > 1: json.dump(out, open(sys.argv[1], "w"), indent=1)

"""onnxruntime profile of the exported AF-ResNet50 budget 0.25 model, per op type (ms per run)."""
import collections
import json
import os
import tempfile
import time

import afnet
import onnxruntime as ort
import torch
from afnet.tools.export import export_model

torch.manual_seed(0)
m = afnet.create_model("af_resnet50", num_classes=174, num_segments=8).eval()
v = torch.randn(1, 8, 3, 224, 224)
f = afnet.freeze(m, frame_budget=0.25, backend="torch")
p = export_model(f, v, os.path.join(tempfile.mkdtemp(), "af_budget.onnx"), "onnx")
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
so.enable_profiling = True
so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
x = v.numpy()
for _ in range(3): s.run(None, {name: x})
ts = []
for _ in range(5):
    t = time.perf_counter(); s.run(None, {name: x}); ts.append(time.perf_counter() - t)
prof = s.end_profiling()
print("median ms", sorted(ts)[2] * 1e3)
ev = json.load(open(prof))
agg = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        agg[e["args"]["op_name"]] += e["dur"] / 1e3 / 8
tot = sum(agg.values())
for k, ms in agg.most_common(15): print(f"{k:28s} {ms:7.1f} ms {100*ms/tot:5.1f}%")
print("sum", tot)

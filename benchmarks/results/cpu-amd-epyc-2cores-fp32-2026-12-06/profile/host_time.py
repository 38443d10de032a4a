"""Host time per eval forward of AF-ResNet50 on a tiny input (1 video x 8 frames x 32 px), where
the compute is small, so the figure is dominated by Python and dispatch work. Median of 200."""
import time

import torch

import afnet

torch.set_num_threads(1)
torch.manual_seed(0)
m = afnet.create_model("af_resnet50", num_classes=174, num_segments=8, policy="uniform", rt=0.25).eval()
v = torch.randn(1, 8, 3, 32, 32)
def med(f, n=200):
    for _ in range(10): f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[n // 2] * 1e3
with torch.inference_mode():
    print("live model.eval() forward: %.2f ms" % med(lambda: m(v)))
    if hasattr(afnet, "freeze"):
        f = afnet.freeze(m)
        print("afnet.freeze(model) forward: %.2f ms" % med(lambda: f(v)))
    # the per-forward state check alone
    try:
        from afnet.engine.signature import state_signature as sig
    except ImportError:
        from afnet.engine.state import state_signature as sig
    print("state signature walk: %.2f ms" % med(lambda: sig(m.base_model)))

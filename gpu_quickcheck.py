# Temporary first GPU check: CUDA ops vs reference (not committed).
import itertools, torch, afnet_kernels as K, afnet_kernels.reference as R, json, time
print(json.dumps(K.backends()))
torch.manual_seed(0)
dev = "cuda"
fails = 0
def cmp(name, a, b, tol):
    global fails
    a = a.float().cpu(); b = b.float().cpu()
    err = ((a - b).norm() / (b.norm() + 1e-12)).item() if b.numel() else 0.0
    bad = (not torch.isfinite(a).all()) or err > tol
    if bad:
        fails += 1
        print("FAIL", name, err)
for dtype, cl, (N, T, C, H, W), sel in itertools.product(
        [torch.float32, torch.float64, torch.bfloat16, torch.float16], [False, True],
        [(2, 8, 64, 14, 14), (1, 1, 13, 1, 1), (3, 4, 30, 7, 9), (2, 8, 256, 56, 56)], ["none", "all", "one", "rand"]):
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2
    mask = {"none": torch.zeros(N, T), "all": torch.ones(N, T), "one": torch.zeros(N, T).index_fill_(1, torch.tensor([0]), 1)[:1].expand(N, T).clone() if False else torch.eye(1, N * T).reshape(N, T), "rand": (torch.rand(N, T) > 0.5).float()}[sel].to(dev)
    idx, inv = K.select_frames(mask)
    ridx, rinv = R.select_frames(mask)
    assert torch.equal(idx, ridx) and torch.equal(inv, rinv), ("select", sel)
    mf = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(N * T, C, H, W, device=dev, dtype=dtype).contiguous(memory_format=mf)
    for div in (0, 8, 4):
        g = K.gather_frames(x, idx, T, div)
        cmp(f"gather {dtype} cl={cl} {N,T,C,H,W} {sel} div={div}", g, R.gather_frames(x, idx, T, div), tol)
        if cl and g.numel() and not g.is_contiguous(memory_format=torch.channels_last) and C > 1 and H * W > 1:
            print("LAYOUT gather", dtype, (N, T, C, H, W))
    src = torch.randn(idx.numel(), C, H, W, device=dev, dtype=dtype).contiguous(memory_format=mf)
    for fill in (None, torch.randn(C, device=dev, dtype=dtype), torch.randn(C, H, W, device=dev, dtype=dtype)):
        for relu in (False, True):
            cmp(f"scatter {dtype} cl={cl} {N,T,C,H,W} {sel} fill={None if fill is None else fill.dim()} relu={relu}",
                K.scatter_frames(x, src, idx, fill, relu), R.scatter_frames(x, src, idx, fill, relu), tol)
    for (h, w) in ((max(H // 2, 1), max(W // 2, 1)), (H, W), (max(H // 3, 1), max(W // 2 + 1, 1))):
        a = torch.randn(N * T, C, h, w, device=dev, dtype=dtype).contiguous(memory_format=mf)
        th = torch.rand(N * T, C, device=dev, dtype=dtype)
        for relu in (True, False):
            cmp(f"blend {dtype} cl={cl} {h,w}->{H,W}", K.blend_branches(a, x, th, relu), R.blend_branches(a, x, th, relu), tol)
        cmp(f"pool {dtype} cl={cl} {h,w}->{H,W}", K.pool_branches(a, x), R.pool_branches(a, x), tol * 10)
        if dtype == torch.float64 and C < 100:
            a1 = a.clone().requires_grad_(); x1 = x.clone().requires_grad_(); t1 = th.clone().requires_grad_()
            a2 = a.clone().requires_grad_(); x2 = x.clone().requires_grad_(); t2 = th.clone().requires_grad_()
            go = torch.randn(N * T, C, H, W, device=dev, dtype=dtype)
            gp = torch.randn(N * T, C, device=dev, dtype=dtype)
            ((K.blend_branches(a1, x1, t1) * go).sum() + (K.pool_branches(a1, x1) * gp).sum()).backward()
            ((R.blend_branches(a2, x2, t2) * go).sum() + (R.pool_branches(a2, x2) * gp).sum()).backward()
            for n, p, q in (("ga", a1, a2), ("gx", x1, x2), ("gt", t1, t2)):
                cmp(f"blend-grad {n} {h,w}->{H,W} cl={cl}", p.grad, q.grad, 1e-9)
    if dtype == torch.float64 and C < 100:
        for div in (0, 8):
            x1 = x.clone().requires_grad_(); x2 = x.clone().requires_grad_()
            go = torch.randn(idx.numel(), C, H, W, device=dev, dtype=dtype)
            (K.gather_frames(x1, idx, T, div) * go).sum().backward(); (R.gather_frames(x2, idx, T, div) * go).sum().backward()
            cmp(f"gather-grad div={div} {sel}", x1.grad, x2.grad, 1e-12)
print("FAILS", fails)
# quick timing, bf16 channels_last, [64,256,56,56]
from triton.testing import do_bench
x = torch.randn(64, 256, 56, 56, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
mask = (torch.rand(8, 8, device=dev) < 0.25)
idx, _ = K.select_frames(mask)
nb = x.numel() * 2
t_clone = do_bench(lambda: x.clone(), return_mode="median")
t_g = do_bench(lambda: K.gather_frames(x, idx, 8, 8), return_mode="median")
t_gr = do_bench(lambda: R.temporal_shift(x, 8, 8)[idx], return_mode="median")
src = torch.randn(idx.numel(), 256, 56, 56, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
fill = torch.randn(256, 56, 56, device=dev, dtype=torch.bfloat16)
t_s = do_bench(lambda: K.scatter_frames(x, src, idx, fill, True), return_mode="median")
a = torch.randn(64, 256, 28, 28, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
th = torch.rand(64, 256, device=dev, dtype=torch.bfloat16)
t_b = do_bench(lambda: K.blend_branches(a, x, th), return_mode="median")
t_br = do_bench(lambda: R.blend_branches(a, x, th), return_mode="median")
t_p = do_bench(lambda: K.pool_branches(a, x), return_mode="median")
k = idx.numel()
print(f"clone {t_clone:.3f}ms {2*nb/t_clone/1e6:.0f}GB/s")
print(f"gather shift K={k} {t_g:.3f}ms {2*k/64*nb/t_g/1e6:.0f}GB/s ref {t_gr:.3f}ms")
print(f"scatter {t_s:.3f}ms {(2*nb + k/64*nb)/t_s/1e6:.0f}GB/s")
print(f"blend {t_b:.3f}ms {(2*nb+nb/4)/t_b/1e6:.0f}GB/s ref {t_br:.3f}ms")
print(f"pool {t_p:.3f}ms {(nb+nb/4)/t_p/1e6:.0f}GB/s")

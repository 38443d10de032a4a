// The one schema file of afnet_kernels: every op is declared here, and the
// per-device files (cpu/*.cpp, cuda/*.cu) only register implementations.
//
// Layout convention: a clip batch of N videos with T frames is stored
// frame-major as [N*T, C, H, W], row n*T + t.
#include <torch/library.h>

TORCH_LIBRARY(afnet_kernels, m) {
  // mask [N, T] (bool or 0/1) -> index int64 [K] ascending, inverse int64 [N*T] (position or -1).
  // With num_selected given, the caller vouches for K and no host sync happens.
  m.def("select_frames(Tensor mask, int? num_selected=None) -> (Tensor index, Tensor inverse)");
  // x [N*T, C, H, W], index [K] -> [K, C, H, W]; shift_div > 0 applies TSM on the fly.
  m.def("gather_frames(Tensor x, Tensor index, int num_segments=0, int shift_div=0) -> Tensor");
  // grad [K, C, H, W] -> [num_rows, C, H, W]: scatter-add with the inverse shift.
  m.def(
      "_gather_frames_backward(Tensor grad, Tensor index, int num_rows, int num_segments, "
      "int shift_div) -> Tensor");
  // base [N*T, C, H, W], src [K, C, H, W], index [K] distinct, fill None/[C]/[C, H, W].
  m.def(
      "scatter_frames(Tensor base, Tensor src, Tensor index, Tensor? fill=None, bool relu=False) "
      "-> Tensor");
  // ample [N*T, C, h, w], focal [N*T, C, H, W], theta [N*T, C] or [N*T, C, 1, 1].
  m.def("blend_branches(Tensor ample, Tensor focal, Tensor theta, bool relu=True) -> Tensor");
  // grads of blend_branches w.r.t. (ample, focal, theta); out is the forward result (for ReLU).
  m.def(
      "_blend_branches_backward(Tensor grad, Tensor out, Tensor ample, Tensor focal, Tensor theta, "
      "bool relu) -> (Tensor, Tensor, Tensor)");
  // mean over H, W of up(ample) + focal -> [N*T, C].
  m.def("pool_branches(Tensor ample, Tensor focal) -> Tensor");
}

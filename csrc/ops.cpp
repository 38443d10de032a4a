// The one schema file of afnet_kernels: every op is declared here, and the
// per-device files (cpu/*.cpp, cuda/*.cu) only register implementations.
//
// Layout convention: a clip batch of N videos with T frames is stored
// frame-major as [N*T, C, H, W], row n*T + t.
//
// Index tensors are int64; the value -1 is padding (gathers give zeros for it,
// scatters ignore it). `validate` checks the other values (range, and
// distinctness for scatters) with the same message on every device; on CUDA
// that costs one device->host read. With validate=False the caller vouches for
// the values: the CPU still checks them (it reads them anyway), and the CUDA
// kernels stop with a device-side assert on a bad value, as PyTorch's own CUDA
// index ops do, rather than touch memory out of bounds.
#include <torch/library.h>

#include "common/build_id.h"

AFNET_DEFINE_BUILD_ID(afnet_kernels_cpu_build_id);

TORCH_LIBRARY(afnet_kernels, m) {
  // mask [N, T] (bool or 0/1) -> index int64 [K'] ascending, inverse int64 [N*T] (position or -1).
  // K' = num_selected when given (must be >= the K the mask selects; entries past K are -1),
  // else K (a host read on CUDA).
  m.def(
      "select_frames(Tensor mask, int? num_selected=None, bool validate=True) "
      "-> (Tensor index, Tensor inverse)");
  // x [N*T, C, H, W], index [K] -> [K, C, H, W]; shift_div > 0 applies TSM on the fly.
  m.def(
      "gather_frames(Tensor x, Tensor index, int num_segments=0, int shift_div=0, "
      "bool validate=True) -> Tensor");
  // grad [K, C, H, W] -> [num_rows, C, H, W]: scatter-add with the inverse shift.
  m.def(
      "_gather_frames_backward(Tensor grad, Tensor index, int num_rows, int num_segments, "
      "int shift_div, bool validate=True) -> Tensor");
  // base [N*T, C, H, W], src [K, C, H, W], index [K] distinct, fill None/[C]/[C, H, W].
  m.def(
      "scatter_frames(Tensor base, Tensor src, Tensor index, Tensor? fill=None, bool relu=False, "
      "bool validate=True) -> Tensor");
  // scatter_frames written into base, which it returns (an inference op: no autograd,
  // afnet_kernels/ops.py refuses inputs that require grad). A base that is not dense, or
  // that shares memory with src or fill, is computed densely and copied back.
  // Tag inplace: torch.compile functionalizes it (auto_functionalized_v2).
  m.def(
      "scatter_frames_(Tensor(a!) base, Tensor src, Tensor index, Tensor? fill=None, "
      "bool relu=False, bool validate=True) -> Tensor(a!)",
      {at::Tag::inplace});
  // ample [N*T, C, h, w], focal [N*T, C, H, W], theta [N*T, C] or [N*T, C, 1, 1].
  m.def("blend_branches(Tensor ample, Tensor focal, Tensor theta, bool relu=True) -> Tensor");
  // grads of blend_branches w.r.t. (ample, focal, theta); out is the forward result (for ReLU).
  m.def(
      "_blend_branches_backward(Tensor grad, Tensor out, Tensor ample, Tensor focal, Tensor theta, "
      "bool relu) -> (Tensor, Tensor, Tensor)");
  // mean over H, W of up(ample) + focal -> [N*T, C].
  m.def("pool_branches(Tensor ample, Tensor focal) -> Tensor");
  // Spatial tiles (common/tiles.h): x [N*T, C, H_in, W_in], index [K] of cell ids
  // row*Gh*Gw + cy*Gw + cx -> [K, C, Th, Tw], Th = (ceil(H_out/Gh) - 1)*stride + 1 + 2*halo.
  m.def(
      "gather_tiles(Tensor x, Tensor index, int[2] grid, int[2] out_size, int stride=1, "
      "int halo=1, int num_segments=0, int shift_div=0, bool validate=True) -> Tensor");
  // grad [K, C, Th, Tw] -> [num_rows, C, H_in, W_in]: the tiles' (overlapping) sum.
  m.def(
      "_gather_tiles_backward(Tensor grad, Tensor index, int[2] grid, int[2] out_size, "
      "int[2] in_size, int num_rows, int stride, int halo, int num_segments, int shift_div, "
      "bool validate=True) -> Tensor");
  // base [N*T, C, H_out, W_out], src [K, C, Sh, Sw], index [K] distinct cell ids,
  // fill None/[C]/[C, H_out, W_out].
  m.def(
      "scatter_tiles(Tensor base, Tensor src, Tensor index, int[2] grid, Tensor? fill=None, "
      "bool relu=False, bool validate=True) -> Tensor");
}

// CUDA kernels of the branch-fusion ops: blend_branches, its backward, and
// pool_branches. The nearest upsampling of the ample branch is folded into the
// indexing (nearest_source_index forward, nearest_target_begin for the
// preimages), so up(ample) is never built.
//
// Reductions (pooling, the theta gradient) add in a fixed order: a warp per
// channel plane (contiguous) or per-split partial sums added afterwards
// (channels_last), so every op here is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/checks.h"
#include "common/indexing.h"
#include "cuda/launch.cuh"

namespace afnet_kernels {
namespace cuda {
namespace {

// Sizes of a branch pair: focal [rows, C, H, W], ample [rows, C, h, w], both
// dense in the same layout.
struct BranchGeometry {
  int64_t rows;
  uint32_t channels;
  uint32_t height, width;              // focal H, W
  uint32_t ample_height, ample_width;  // ample h, w
  bool channels_last;

  __host__ __device__ uint32_t pixels() const { return height * width; }
  __host__ __device__ uint32_t ample_pixels() const { return ample_height * ample_width; }
};

BranchGeometry branch_geometry(const at::Tensor& ample, const at::Tensor& focal,
                               at::MemoryFormat format, const char* op) {
  checked_frame_numel(ample, op);
  checked_frame_numel(focal, op);
  return {focal.size(0),
          static_cast<uint32_t>(focal.size(1)),
          static_cast<uint32_t>(focal.size(2)),
          static_cast<uint32_t>(focal.size(3)),
          static_cast<uint32_t>(ample.size(2)),
          static_cast<uint32_t>(ample.size(3)),
          format == at::MemoryFormat::ChannelsLast};
}

// theta [rows, C] (from [rows, C] or [rows, C, 1, 1]).
at::Tensor theta_matrix(const at::Tensor& theta, const at::Tensor& focal) {
  return theta.reshape({focal.size(0), focal.size(1)}).contiguous();
}

// ---------------------------------------------------------------------------
// blend_branches
// ---------------------------------------------------------------------------

// Moves the position (c, y, x) of a frame element to the next element in
// memory order: x, then y, then c (contiguous); c, then x, then y
// (channels_last). Past the frame's last element it leaves the frame.
__device__ __forceinline__ void advance_position(const BranchGeometry& g, uint32_t& c,
                                                 uint32_t& y, uint32_t& x) {
  if (g.channels_last) {
    if (++c == g.channels) {
      c = 0;
      if (++x == g.width) {
        x = 0;
        ++y;
      }
    }
  } else if (++x == g.width) {
    x = 0;
    if (++y == g.height) {
      y = 0;
      ++c;
    }
  }
}

// out = θ·up(ample) + (1−θ)·focal, ReLU if asked. focal and out move in packs
// of N elements, which may cross image rows, channels or pixels; ample and
// theta are read per element, or as packs when `ample_packs` (channels_last
// with C % N == 0: a pack is N channels of one pixel).
template <typename T, int N>
__global__ void blend_kernel(const T* __restrict__ ample, const T* __restrict__ focal,
                             const T* __restrict__ theta, T* __restrict__ out,
                             BranchGeometry g, bool relu, bool ample_packs) {
  using acc_t = at::opmath_type<T>;
  const uint32_t pixels = g.pixels();
  const uint32_t row_numel = g.channels * pixels;
  const uint32_t ample_row_numel = g.channels * g.ample_pixels();
  const uint32_t row_packs = row_numel / N;
  const Layout layout{g.channels, pixels, g.channels_last};
  for (int64_t n = grid_row_begin(); n < g.rows; n += grid_row_stride()) {
    const T* focal_row = focal + n * row_numel;
    const T* ample_row = ample + n * ample_row_numel;
    const T* theta_row = theta + n * g.channels;
    T* out_row = out + n * row_numel;
    for (uint32_t p = grid_pack_begin(); p < row_packs; p += grid_pack_stride()) {
      const uint32_t j = p * N;
      uint32_t c = layout.channel(j);
      const uint32_t pixel = layout.pixel(j);
      uint32_t y = pixel / g.width;
      uint32_t x = pixel % g.width;
      const Pack<T, N> f = load_pack<N>(focal_row + j);
      Pack<T, N> a;
      acc_t th[N];
      if (ample_packs) {
        const int64_t sy = nearest_source_index(y, g.ample_height, g.height);
        const int64_t sx = nearest_source_index(x, g.ample_width, g.width);
        a = load_pack<N>(ample_row + (sy * g.ample_width + sx) * g.channels + c);
#pragma unroll
        for (int i = 0; i < N; ++i) th[i] = static_cast<acc_t>(theta_row[c + i]);
      } else {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const int64_t sy = nearest_source_index(y, g.ample_height, g.height);
          const int64_t sx = nearest_source_index(x, g.ample_width, g.width);
          a.v[i] = ample_row[g.channels_last
                                 ? (sy * g.ample_width + sx) * g.channels + c
                                 : (static_cast<int64_t>(c) * g.ample_height + sy) * g.ample_width + sx];
          th[i] = static_cast<acc_t>(theta_row[c]);
          advance_position(g, c, y, x);
        }
      }
      Pack<T, N> result;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const acc_t v = th[i] * static_cast<acc_t>(a.v[i]) + (acc_t(1) - th[i]) * static_cast<acc_t>(f.v[i]);
        result.v[i] = static_cast<T>(relu ? relu_keep_nan(v) : v);
      }
      store_pack<N>(out_row + j, result);
    }
  }
}

at::Tensor blend_branches_cuda(const at::Tensor& ample_in, const at::Tensor& focal_in,
                               const at::Tensor& theta_in, bool relu) {
  check_blend_args(ample_in, focal_in, theta_in);
  const c10::cuda::CUDAGuard guard(focal_in.device());
  const at::MemoryFormat format = memory_format_of(focal_in);
  const at::Tensor focal = dense_in(focal_in, format);
  const at::Tensor ample = dense_in(ample_in, format);
  const at::Tensor theta = theta_matrix(theta_in, focal);
  at::Tensor out = at::empty(focal.sizes(), focal.options().memory_format(format));
  if (out.numel() == 0) return out;
  const BranchGeometry g = branch_geometry(ample, focal, format, "blend_branches");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, focal.scalar_type(), "blend_branches_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const int64_t row_numel = static_cast<int64_t>(g.channels) * g.pixels();
    const bool wide = row_numel % kWidth == 0 && all_aligned({focal.data_ptr(), out.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const bool ample_packs = g.channels_last && g.channels % N == 0 &&
                               is_aligned(ample.data_ptr(), N * sizeof(scalar_t));
      const RowGrid grid = row_grid(g.rows, row_numel / N);
      blend_kernel<scalar_t, N><<<grid.grid, grid.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          ample.data_ptr<scalar_t>(), focal.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), g, relu, ample_packs);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// pool_branches
// ---------------------------------------------------------------------------

// Contiguous: one warp per (row, channel) plane. The ample part reads each
// ample pixel once, weighted by the size of its preimage.
template <typename T, int N>
__global__ void pool_planes_kernel(const T* __restrict__ ample, const T* __restrict__ focal,
                                   T* __restrict__ out, BranchGeometry g) {
  using acc_t = at::opmath_type<T>;
  const uint32_t lane = threadIdx.x & 31u;
  const int64_t planes = g.rows * g.channels;
  const uint32_t pixels = g.pixels();
  const uint32_t ample_pixels = g.ample_pixels();
  const int64_t warp_stride = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t plane = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
       plane < planes; plane += warp_stride) {
    acc_t sum = acc_t(0);
    const T* f = focal + plane * pixels;
    for (uint32_t p = lane; p < pixels / N; p += 32) {
      const Pack<T, N> pack = load_pack<N>(f + p * N);
#pragma unroll
      for (int i = 0; i < N; ++i) sum += static_cast<acc_t>(pack.v[i]);
    }
    const T* a = ample + plane * ample_pixels;
    for (uint32_t q = lane; q < ample_pixels; q += 32) {
      const int64_t count = preimage_size(q / g.ample_width, g.ample_height, g.height) *
                            preimage_size(q % g.ample_width, g.ample_width, g.width);
      sum += static_cast<acc_t>(a[q]) * static_cast<acc_t>(count);
    }
    sum = warp_sum(sum);
    if (lane == 0) out[plane] = static_cast<T>(sum / static_cast<acc_t>(pixels));
  }
}

// channels_last: a block per (row, channel tile, pixel split); partial sums
// [splits, rows, C] are added by sum_splits_kernel.
template <typename T, int N>
__global__ void pool_pixels_kernel(const T* __restrict__ ample, const T* __restrict__ focal,
                                   at::opmath_type<T>* __restrict__ partial, BranchGeometry g,
                                   int64_t tiles, uint32_t splits) {
  using acc_t = at::opmath_type<T>;
  const int64_t n = blockIdx.x / tiles;
  const uint32_t tile = blockIdx.x % tiles;
  const uint32_t split = blockIdx.y;
  const uint32_t c = (tile * blockDim.x + threadIdx.x) * N;
  const bool active = c < g.channels;
  acc_t acc[N];
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = acc_t(0);
  if (active) {
    uint32_t begin, end;
    split_range(g.pixels(), splits, split, begin, end);
    for (uint32_t p = begin + threadIdx.y; p < end; p += blockDim.y) {
      const Pack<T, N> pack = load_pack<N>(focal + (n * g.pixels() + p) * g.channels + c);
#pragma unroll
      for (int i = 0; i < N; ++i) acc[i] += static_cast<acc_t>(pack.v[i]);
    }
    split_range(g.ample_pixels(), splits, split, begin, end);
    for (uint32_t q = begin + threadIdx.y; q < end; q += blockDim.y) {
      const acc_t count = static_cast<acc_t>(
          preimage_size(q / g.ample_width, g.ample_height, g.height) *
          preimage_size(q % g.ample_width, g.ample_width, g.width));
      const Pack<T, N> pack = load_pack<N>(ample + (n * g.ample_pixels() + q) * g.channels + c);
#pragma unroll
      for (int i = 0; i < N; ++i) acc[i] += static_cast<acc_t>(pack.v[i]) * count;
    }
  }
  sum_over_block_rows<N>(acc, active,
                         active ? partial + (split * g.rows + n) * g.channels + c : nullptr);
}

at::Tensor pool_branches_cuda(const at::Tensor& ample_in, const at::Tensor& focal_in) {
  check_pool_args(ample_in, focal_in);
  const c10::cuda::CUDAGuard guard(focal_in.device());
  const at::MemoryFormat format = memory_format_of(focal_in);
  const at::Tensor focal = dense_in(focal_in, format);
  const at::Tensor ample = dense_in(ample_in, format);
  at::Tensor out = at::empty({focal.size(0), focal.size(1)}, focal.options());
  if (out.numel() == 0) return out;
  const BranchGeometry g = branch_geometry(ample, focal, format, "pool_branches");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, focal.scalar_type(), "pool_branches_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kWidth = pack_width<scalar_t>();
    if (!g.channels_last) {
      const bool wide = g.pixels() % kWidth == 0 && all_aligned({focal.data_ptr()});
      with_pack_width<scalar_t>(wide, [&](auto width) {
        constexpr int N = decltype(width)::value;
        pool_planes_kernel<scalar_t, N><<<flat_blocks(out.numel() * 32), kThreads, 0, stream>>>(
            ample.data_ptr<scalar_t>(), focal.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      return;
    }
    const bool wide = g.channels % kWidth == 0 && all_aligned({focal.data_ptr(), ample.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const PixelGrid grid = pixel_grid(g.rows, ceil_div(g.channels, N), g.pixels());
      at::Tensor partial = at::empty({grid.splits, g.rows, static_cast<int64_t>(g.channels)},
                                     focal.options().dtype(at::toOpMathType(focal.scalar_type())));
      pool_pixels_kernel<scalar_t, N><<<grid.grid, grid.block, 0, stream>>>(
          ample.data_ptr<scalar_t>(), focal.data_ptr<scalar_t>(), partial.data_ptr<acc_t>(), g,
          grid.tiles, grid.splits);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sum_splits_kernel<scalar_t, acc_t><<<flat_blocks(out.numel()), kThreads, 0, stream>>>(
          partial.data_ptr<acc_t>(), out.numel(), grid.splits, static_cast<acc_t>(g.pixels()),
          out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// _blend_branches_backward
// ---------------------------------------------------------------------------
// With g = grad through the ReLU (zero where out <= 0):
//   grad_focal = (1−θ)·g,  grad_ample[s] = θ · Σ_{preimage of s} g,
//   grad_theta = Σ_{H,W} g·(up(ample) − focal).
// Each thread owns ample pixels and walks their preimages, which partition the
// focal pixels, so every output element has one writer.

// Contiguous: one warp per (row, channel) plane, lanes over ample pixels.
template <typename T>
__global__ void blend_backward_planes_kernel(
    const T* __restrict__ grad, const T* __restrict__ out, const T* __restrict__ ample,
    const T* __restrict__ focal, const T* __restrict__ theta, T* __restrict__ grad_ample,
    T* __restrict__ grad_focal, T* __restrict__ grad_theta, BranchGeometry g, bool relu) {
  using acc_t = at::opmath_type<T>;
  const uint32_t lane = threadIdx.x & 31u;
  const int64_t planes = g.rows * g.channels;
  const uint32_t ample_pixels = g.ample_pixels();
  const int64_t warp_stride = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t plane = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
       plane < planes; plane += warp_stride) {
    const acc_t th = static_cast<acc_t>(theta[plane]);
    const int64_t plane_base = plane * g.pixels();
    const int64_t ample_base = plane * ample_pixels;
    acc_t theta_sum = acc_t(0);
    for (uint32_t q = lane; q < ample_pixels; q += 32) {
      const int64_t sy = q / g.ample_width;
      const int64_t sx = q % g.ample_width;
      const int64_t y_end = nearest_target_begin(sy + 1, g.ample_height, g.height);
      const int64_t x_begin = nearest_target_begin(sx, g.ample_width, g.width);
      const int64_t x_end = nearest_target_begin(sx + 1, g.ample_width, g.width);
      const acc_t a = static_cast<acc_t>(ample[ample_base + q]);
      acc_t grad_sum = acc_t(0);
      for (int64_t y = nearest_target_begin(sy, g.ample_height, g.height); y < y_end; ++y) {
        for (int64_t x = x_begin; x < x_end; ++x) {
          const int64_t o = plane_base + y * g.width + x;
          acc_t gv = static_cast<acc_t>(grad[o]);
          if (relu) gv = relu_grad(gv, static_cast<acc_t>(out[o]));
          grad_focal[o] = static_cast<T>((acc_t(1) - th) * gv);
          grad_sum += gv;
          theta_sum += gv * (a - static_cast<acc_t>(focal[o]));
        }
      }
      grad_ample[ample_base + q] = static_cast<T>(th * grad_sum);
    }
    theta_sum = warp_sum(theta_sum);
    if (lane == 0) grad_theta[plane] = static_cast<T>(theta_sum);
  }
}

// channels_last: a block per (row, channel tile, ample-pixel split), threads
// own N channels of ample pixels; theta partials [splits, rows, C].
template <typename T, int N>
__global__ void blend_backward_pixels_kernel(
    const T* __restrict__ grad, const T* __restrict__ out, const T* __restrict__ ample,
    const T* __restrict__ focal, const T* __restrict__ theta, T* __restrict__ grad_ample,
    T* __restrict__ grad_focal, at::opmath_type<T>* __restrict__ partial, BranchGeometry g,
    int64_t tiles, uint32_t splits, bool relu) {
  using acc_t = at::opmath_type<T>;
  const int64_t n = blockIdx.x / tiles;
  const uint32_t tile = blockIdx.x % tiles;
  const uint32_t split = blockIdx.y;
  const uint32_t c = (tile * blockDim.x + threadIdx.x) * N;
  const bool active = c < g.channels;
  acc_t theta_sum[N];
#pragma unroll
  for (int i = 0; i < N; ++i) theta_sum[i] = acc_t(0);
  if (active) {
    acc_t th[N];
#pragma unroll
    for (int i = 0; i < N; ++i) th[i] = static_cast<acc_t>(theta[n * g.channels + c + i]);
    uint32_t begin, end;
    split_range(g.ample_pixels(), splits, split, begin, end);
    for (uint32_t q = begin + threadIdx.y; q < end; q += blockDim.y) {
      const int64_t sy = q / g.ample_width;
      const int64_t sx = q % g.ample_width;
      const int64_t y_end = nearest_target_begin(sy + 1, g.ample_height, g.height);
      const int64_t x_begin = nearest_target_begin(sx, g.ample_width, g.width);
      const int64_t x_end = nearest_target_begin(sx + 1, g.ample_width, g.width);
      const int64_t a_offset = (n * g.ample_pixels() + q) * g.channels + c;
      const Pack<T, N> a = load_pack<N>(ample + a_offset);
      acc_t grad_sum[N];
#pragma unroll
      for (int i = 0; i < N; ++i) grad_sum[i] = acc_t(0);
      for (int64_t y = nearest_target_begin(sy, g.ample_height, g.height); y < y_end; ++y) {
        for (int64_t x = x_begin; x < x_end; ++x) {
          const int64_t o = ((n * g.height + y) * g.width + x) * g.channels + c;
          const Pack<T, N> gp = load_pack<N>(grad + o);
          const Pack<T, N> fp = load_pack<N>(focal + o);
          const Pack<T, N> op = relu ? load_pack<N>(out + o) : gp;
          Pack<T, N> gf;
#pragma unroll
          for (int i = 0; i < N; ++i) {
            acc_t gv = static_cast<acc_t>(gp.v[i]);
            if (relu) gv = relu_grad(gv, static_cast<acc_t>(op.v[i]));
            gf.v[i] = static_cast<T>((acc_t(1) - th[i]) * gv);
            grad_sum[i] += gv;
            theta_sum[i] += gv * (static_cast<acc_t>(a.v[i]) - static_cast<acc_t>(fp.v[i]));
          }
          store_pack<N>(grad_focal + o, gf);
        }
      }
      Pack<T, N> ga;
#pragma unroll
      for (int i = 0; i < N; ++i) ga.v[i] = static_cast<T>(th[i] * grad_sum[i]);
      store_pack<N>(grad_ample + a_offset, ga);
    }
  }
  sum_over_block_rows<N>(theta_sum, active,
                         active ? partial + (split * g.rows + n) * g.channels + c : nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> blend_branches_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& out_in, const at::Tensor& ample_in,
    const at::Tensor& focal_in, const at::Tensor& theta_in, bool relu) {
  check_blend_backward_args(grad_in, out_in, ample_in, focal_in, theta_in);
  const c10::cuda::CUDAGuard guard(focal_in.device());
  const at::MemoryFormat format = memory_format_of(focal_in);
  const at::Tensor focal = dense_in(focal_in, format);
  const at::Tensor ample = dense_in(ample_in, format);
  const at::Tensor grad = dense_in(grad_in, format);
  const at::Tensor out = relu ? dense_in(out_in, format) : grad;  // out is read only under ReLU
  const at::Tensor theta = theta_matrix(theta_in, focal);
  at::Tensor grad_focal = at::empty(focal.sizes(), focal.options().memory_format(format));
  at::Tensor grad_ample = at::empty(ample.sizes(), ample.options().memory_format(format));
  at::Tensor grad_theta = at::empty(theta_in.sizes(), theta.options());
  if (focal.numel() == 0) {
    // No focal pixel reads any ample pixel or theta: zero gradients.
    grad_ample.zero_();
    grad_theta.zero_();
    return {grad_ample, grad_focal, grad_theta};
  }
  const BranchGeometry g = branch_geometry(ample, focal, format, "_blend_branches_backward");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, focal.scalar_type(), "blend_branches_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (!g.channels_last) {
      blend_backward_planes_kernel<scalar_t><<<flat_blocks(g.rows * g.channels * 32), kThreads, 0, stream>>>(
          grad.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), ample.data_ptr<scalar_t>(),
          focal.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(), grad_ample.data_ptr<scalar_t>(),
          grad_focal.data_ptr<scalar_t>(), grad_theta.data_ptr<scalar_t>(), g, relu);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    constexpr int kWidth = pack_width<scalar_t>();
    const bool wide = g.channels % kWidth == 0 &&
                      all_aligned({grad.data_ptr(), out.data_ptr(), ample.data_ptr(),
                                   focal.data_ptr(), grad_ample.data_ptr(),
                                   grad_focal.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const PixelGrid grid = pixel_grid(g.rows, ceil_div(g.channels, N), g.ample_pixels());
      at::Tensor partial = at::empty({grid.splits, g.rows, static_cast<int64_t>(g.channels)},
                                     focal.options().dtype(at::toOpMathType(focal.scalar_type())));
      blend_backward_pixels_kernel<scalar_t, N><<<grid.grid, grid.block, 0, stream>>>(
          grad.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), ample.data_ptr<scalar_t>(),
          focal.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(), grad_ample.data_ptr<scalar_t>(),
          grad_focal.data_ptr<scalar_t>(), partial.data_ptr<acc_t>(), g, grid.tiles, grid.splits,
          relu);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sum_splits_kernel<scalar_t, acc_t><<<flat_blocks(g.rows * g.channels), kThreads, 0, stream>>>(
          partial.data_ptr<acc_t>(), g.rows * g.channels, grid.splits, acc_t(1),
          grad_theta.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {grad_ample, grad_focal, grad_theta};
}

}  // namespace
}  // namespace cuda
}  // namespace afnet_kernels

TORCH_LIBRARY_IMPL(afnet_kernels, CUDA, m) {
  m.impl("blend_branches", &afnet_kernels::cuda::blend_branches_cuda);
  m.impl("_blend_branches_backward", &afnet_kernels::cuda::blend_branches_backward_cuda);
  m.impl("pool_branches", &afnet_kernels::cuda::pool_branches_cuda);
}

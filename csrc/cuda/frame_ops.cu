// CUDA kernels of the frame ops: select_frames, gather_frames (with the TSM
// shift on the fly), its backward, scatter_frames and its in-place twin
// scatter_frames_.
//
// Every kernel writes each output element exactly once (a frame row through
// an inverse index), so the ops are deterministic, with one exception: the
// backward of a gather whose index repeats a row adds the repeats with
// atomics, in no fixed order (see gather_frames_backward_cuda).
//
// Index values: -1 is padding (a zero row for gathers, no row for scatters).
// validate=True checks the others on the device and reads the verdict back
// once (index_checks.cuh); validate=False reads nothing back, and a bad value
// stops the kernel with a device-side assert. No kernel reads or writes
// outside its tensors either way.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "common/build_id.h"
#include "common/checks.h"
#include "common/indexing.h"
#include "common/validate.h"
#include "cuda/index_checks.cuh"
#include "cuda/launch.cuh"

AFNET_DEFINE_BUILD_ID(afnet_kernels_cuda_build_id);

namespace afnet_kernels {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------
// select_frames
// ---------------------------------------------------------------------------

// counts = inclusive prefix count of selected rows. Row i is selected when its
// count rises (selected_position); index slots past the real count are -1
// (padding-bucket mode). A caller that claimed fewer rows than the mask
// selects (validate=False) trips the assert; the positions past k_out are
// dropped, so nothing is written out of bounds.
__global__ void select_frames_kernel(const int64_t* __restrict__ counts, int64_t rows,
                                     int64_t k_out, int64_t* __restrict__ index,
                                     int64_t* __restrict__ inverse) {
  const int64_t total = counts[rows - 1];
  CUDA_KERNEL_ASSERT_MSG(total <= k_out,
                         "select_frames: num_selected is smaller than the mask's count");
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < rows || i < k_out; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < rows) {
      const int64_t pos = selected_position(counts[i], i > 0 ? counts[i - 1] : 0);
      const int64_t kept = pos < k_out ? pos : -1;
      inverse[i] = kept;
      if (kept >= 0) index[kept] = i;
    }
    if (i < k_out && i >= total) index[i] = kPadding;
  }
}

std::tuple<at::Tensor, at::Tensor> select_frames_cuda(const at::Tensor& mask,
                                                      std::optional<int64_t> num_selected,
                                                      bool validate) {
  check_select_args(mask, num_selected);
  const c10::cuda::CUDAGuard guard(mask.device());
  const at::Tensor flat = mask.reshape({-1});
  const at::Tensor selected = flat.scalar_type() == at::kBool ? flat : flat.ne(0);
  const int64_t rows = flat.numel();
  const at::Tensor counts = selected.cumsum(0, at::kLong);
  // The op's one host read: K when the caller does not give it, or the check
  // of the caller's value when asked to validate.
  int64_t k = 0;
  if (!num_selected.has_value() || validate) {
    const int64_t count = rows > 0 ? counts.select(0, rows - 1).item<int64_t>() : 0;
    if (num_selected.has_value()) validate_num_selected(*num_selected, count, rows);
    k = num_selected.value_or(count);
  } else {
    k = *num_selected;
  }
  const auto options = mask.options().dtype(at::kLong);
  at::Tensor index = at::empty({k}, options);
  at::Tensor inverse = at::empty({rows}, options);
  if (rows == 0) return {index.fill_(kPadding), inverse};
  select_frames_kernel<<<flat_blocks(std::max(rows, k)), kThreads, 0,
                         c10::cuda::getCurrentCUDAStream()>>>(
      counts.data_ptr<int64_t>(), rows, k, index.data_ptr<int64_t>(),
      inverse.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {index, inverse};
}

// ---------------------------------------------------------------------------
// Shared pieces of the row kernels
// ---------------------------------------------------------------------------

Layout frame_layout(const at::Tensor& t, at::MemoryFormat format) {
  return {static_cast<uint32_t>(t.size(1)), static_cast<uint32_t>(t.size(2) * t.size(3)),
          format == at::MemoryFormat::ChannelsLast};
}

// Whether packs of `width` elements (width | C*H*W) never straddle a TSM
// class (channels [0, fold), [fold, 2*fold), [2*fold, C)), so that the
// channel of a pack's first element picks the source row of the whole pack.
// Class boundaries sit at fold*H*W and 2*fold*H*W in a contiguous frame, and
// at every pixel's channels 0, fold and 2*fold in a channels_last one.
bool shift_runs_allow(const Layout& layout, int64_t fold, int width) {
  if (fold == 0) return true;
  return layout.channels_last ? (layout.channels % width == 0 && fold % width == 0)
                              : (fold * layout.pixels) % width == 0;
}

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load_row_or_zero(const T* base, int64_t row,
                                                       uint32_t row_numel, uint32_t j) {
  return row >= 0 ? load_pack<N>(base + row * row_numel + j) : zero_pack<N, T>();
}

// ---------------------------------------------------------------------------
// gather_frames
// ---------------------------------------------------------------------------

// out[k] = shift(x)[index[k]]: channel c of row k comes from row
// shifted_source_row(index[k], c) (zeros at clip edges and for padding).
template <typename T, int N>
__global__ void gather_frames_kernel(const T* __restrict__ x, const int64_t* __restrict__ index,
                                     T* __restrict__ out, int64_t k_rows, int64_t x_rows,
                                     uint32_t row_numel, Layout layout, int64_t fold,
                                     int64_t num_segments) {
  const uint32_t row_packs = row_numel / N;
  for (int64_t k = grid_row_begin(); k < k_rows; k += grid_row_stride()) {
    const int64_t row = index[k];
    const bool valid = in_range(row, x_rows);
    CUDA_KERNEL_ASSERT_MSG(valid || row == kPadding,
                           "gather_frames: index value out of range (validate=False)");
    T* out_row = out + k * row_numel;
    for (uint32_t p = grid_pack_begin(); p < row_packs; p += grid_pack_stride()) {
      const uint32_t j = p * N;
      const int64_t c = fold > 0 ? layout.channel(j) : 0;
      const int64_t src = valid ? shifted_source_row(row, c, fold, num_segments) : kPadding;
      store_pack<N>(out_row + j, load_row_or_zero<N>(x, src, row_numel, j));
    }
  }
}

at::Tensor gather_frames_cuda(const at::Tensor& x_in, const at::Tensor& index_in,
                              int64_t num_segments, int64_t shift_div, bool validate) {
  check_gather_args(x_in, index_in, num_segments, shift_div);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::MemoryFormat format = memory_format_of(x_in);
  const at::Tensor x = dense_in(x_in, format);
  const at::Tensor index = index_in.contiguous();
  if (validate) {
    validate_index_cuda(index, frame_index_rule("gather_frames", x.size(0), "rows of x", false));
  }
  const int64_t k_rows = index.size(0);
  at::Tensor out = at::empty({k_rows, x.size(1), x.size(2), x.size(3)},
                             x.options().memory_format(format));
  if (out.numel() == 0) return out;
  const uint32_t row_numel = checked_frame_numel(x, "gather_frames");
  const Layout layout = frame_layout(x, format);
  const int64_t fold = shift_fold(x.size(1), shift_div);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gather_frames_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const bool wide = row_numel % kWidth == 0 && shift_runs_allow(layout, fold, kWidth) &&
                      all_aligned({x.data_ptr(), out.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid g = row_grid(k_rows, row_numel / N);
      gather_frames_kernel<scalar_t, N><<<g.grid, g.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), k_rows,
          x.size(0), row_numel, layout, fold, num_segments);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// _gather_frames_backward
// ---------------------------------------------------------------------------

// grad_x[r] at channel c = grad[inverse[shifted_target_row(r, c)]] (or zero):
// with distinct indices each source element receives at most one gradient.
// When the index repeats a row (status bit in inverse[rows]), this writes
// zeros and the atomic kernel below adds every contribution.
template <typename T, int N>
__global__ void gather_backward_kernel(const T* __restrict__ grad,
                                       const int64_t* __restrict__ inverse, T* __restrict__ out,
                                       int64_t rows, uint32_t row_numel, Layout layout,
                                       int64_t fold, int64_t num_segments) {
  const bool zero_only = (inverse[rows] & kIndexRepeated) != 0;
  const uint32_t row_packs = row_numel / N;
  for (int64_t r = grid_row_begin(); r < rows; r += grid_row_stride()) {
    T* out_row = out + r * row_numel;
    for (uint32_t p = grid_pack_begin(); p < row_packs; p += grid_pack_stride()) {
      const uint32_t j = p * N;
      int64_t k = -1;
      if (!zero_only) {
        const int64_t c = fold > 0 ? layout.channel(j) : 0;
        const int64_t target = shifted_target_row(r, c, fold, num_segments);
        k = target >= 0 ? inverse[target] : -1;
      }
      store_pack<N>(out_row + j, load_row_or_zero<N>(grad, k, row_numel, j));
    }
  }
}

// Repeated rows only: out[shifted_source_row(index[k], c)] += grad[k] at c.
// Returns at once (one flag read per thread) when no row repeats.
template <typename T>
__global__ void gather_backward_repeated_kernel(const T* __restrict__ grad,
                                                const int64_t* __restrict__ index,
                                                const int64_t* __restrict__ inverse,
                                                T* __restrict__ out, int64_t k_rows,
                                                int64_t rows, uint32_t row_numel,
                                                Layout layout, int64_t fold,
                                                int64_t num_segments) {
  if ((inverse[rows] & kIndexRepeated) == 0) return;
  const int64_t total = k_rows * row_numel;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / row_numel;
    const uint32_t j = static_cast<uint32_t>(i - k * row_numel);
    const int64_t row = index[k];
    if (!in_range(row, rows)) continue;  // padding (bad values were rejected or asserted)
    const int64_t c = fold > 0 ? layout.channel(j) : 0;
    const int64_t src = shifted_source_row(row, c, fold, num_segments);
    if (src >= 0) gpuAtomicAddNoReturn(out + src * row_numel + j, grad[i]);
  }
}

// Deterministic when the index names each row at most once (select_frames'
// indices); a repeated row is summed with atomics, in no fixed order.
at::Tensor gather_frames_backward_cuda(const at::Tensor& grad_in, const at::Tensor& index_in,
                                       int64_t num_rows, int64_t num_segments,
                                       int64_t shift_div, bool validate) {
  check_gather_backward_args(grad_in, index_in, num_rows, num_segments, shift_div);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::MemoryFormat format = memory_format_of(grad_in);
  const at::Tensor grad = dense_in(grad_in, format);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor inverse = checked_inverse(
      index, frame_index_rule("_gather_frames_backward", num_rows, "num_rows", false), validate);
  at::Tensor out = at::empty({num_rows, grad.size(1), grad.size(2), grad.size(3)},
                             grad.options().memory_format(format));
  if (out.numel() == 0) return out;
  const uint32_t row_numel = checked_frame_numel(grad, "_gather_frames_backward");
  const Layout layout = frame_layout(grad, format);
  const int64_t fold = shift_fold(grad.size(1), shift_div);
  const int64_t k_rows = index.size(0);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_frames_backward_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const bool wide = row_numel % kWidth == 0 && shift_runs_allow(layout, fold, kWidth) &&
                      all_aligned({grad.data_ptr(), out.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid g = row_grid(num_rows, row_numel / N);
      gather_backward_kernel<scalar_t, N><<<g.grid, g.block, 0, stream>>>(
          grad.data_ptr<scalar_t>(), inverse.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
          num_rows, row_numel, layout, fold, num_segments);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (k_rows > 0) {
      // A small grid: in the common case (distinct rows) every block exits at once.
      const int64_t blocks = std::min<int64_t>(ceil_div(k_rows * row_numel, kThreads),
                                               4 * multiprocessor_count());
      gather_backward_repeated_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          grad.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), inverse.data_ptr<int64_t>(),
          out.data_ptr<scalar_t>(), k_rows, num_rows, row_numel, layout, fold, num_segments);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

// ---------------------------------------------------------------------------
// scatter_frames
// ---------------------------------------------------------------------------

// out[r] = base[r] + (inverse[r] >= 0 ? src[inverse[r]] : fill), ReLU last.
// fill is one frame laid out like base's rows, or null for none. out may be
// base itself (scatter_frames_), so neither is __restrict__: each thread reads
// a pack of base and then writes the same pack of out, and src and fill share
// no memory with out (common/checks.h's can_scatter_in_place). With
// skip_unnamed (in place, no fill, no ReLU) the rows index does not name are
// already the result and are not touched.
template <typename T, int N>
__global__ void scatter_frames_kernel(const T* base, const T* __restrict__ src,
                                      const int64_t* __restrict__ inverse,
                                      const T* __restrict__ fill, bool relu, bool skip_unnamed,
                                      T* out, int64_t rows, uint32_t row_numel) {
  const uint32_t row_packs = row_numel / N;
  for (int64_t r = grid_row_begin(); r < rows; r += grid_row_stride()) {
    const int64_t k = inverse[r];
    if (k < 0 && skip_unnamed) continue;
    const T* base_row = base + r * row_numel;
    T* out_row = out + r * row_numel;
    for (uint32_t p = grid_pack_begin(); p < row_packs; p += grid_pack_stride()) {
      const uint32_t j = p * N;
      const Pack<T, N> b = load_pack<N>(base_row + j);
      Pack<T, N> a;
      if (k >= 0) {
        a = load_pack<N>(src + k * row_numel + j);
      } else if (fill != nullptr) {
        a = load_pack<N>(fill + j);
      } else {
        a = zero_pack<N, T>();
      }
      store_pack<N>(out_row + j, add_packs<N>(b, a, relu));
    }
  }
}

// What the scatter kernel reads: base and src dense in base's memory format,
// the inverse of the index (checked as `validate` says, before anything is
// written), and the fill as one frame (undefined for none).
struct ScatterInputs {
  at::MemoryFormat format;
  at::Tensor base;
  at::Tensor src;
  at::Tensor inverse;
  at::Tensor fill;
};

ScatterInputs prepare_scatter(const char* op, const at::Tensor& base_in, const at::Tensor& src_in,
                              const at::Tensor& index_in, const std::optional<at::Tensor>& fill_in,
                              bool validate) {
  ScatterInputs in;
  in.format = memory_format_of(base_in);
  in.base = dense_in(base_in, in.format);
  in.src = dense_in(src_in, in.format);
  const at::Tensor index = index_in.contiguous();
  in.inverse = checked_inverse(
      index, frame_index_rule(op, in.base.size(0), "rows of base", true), validate);
  if (in.base.numel() > 0) in.fill = fill_frame(fill_in, in.base, in.format);
  return in;
}

// Writes the rows of `out` (dense in in.format, non-empty; may be in.base itself).
void launch_scatter(const char* op, at::Tensor& out, const ScatterInputs& in, bool relu) {
  const int64_t rows = in.base.size(0);
  const uint32_t row_numel = checked_frame_numel(in.base, op);
  const bool skip_unnamed = out.is_same(in.base) && !in.fill.defined() && !relu;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.base.scalar_type(), "scatter_frames_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const scalar_t* fill_ptr = in.fill.defined() ? in.fill.data_ptr<scalar_t>() : nullptr;
    const bool wide = row_numel % kWidth == 0 &&
                      all_aligned({in.base.data_ptr(), in.src.data_ptr(), out.data_ptr(), fill_ptr});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid g = row_grid(rows, row_numel / N);
      scatter_frames_kernel<scalar_t, N><<<g.grid, g.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          in.base.data_ptr<scalar_t>(), in.src.data_ptr<scalar_t>(), in.inverse.data_ptr<int64_t>(),
          fill_ptr, relu, skip_unnamed, out.data_ptr<scalar_t>(), rows, row_numel);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

at::Tensor scatter_frames_cuda(const at::Tensor& base_in, const at::Tensor& src_in,
                               const at::Tensor& index_in, const std::optional<at::Tensor>& fill_in,
                               bool relu, bool validate) {
  constexpr const char* op = "scatter_frames";
  check_scatter_args(op, base_in, src_in, index_in, fill_in);
  const c10::cuda::CUDAGuard guard(base_in.device());
  const ScatterInputs in = prepare_scatter(op, base_in, src_in, index_in, fill_in, validate);
  at::Tensor out = at::empty(in.base.sizes(), in.base.options().memory_format(in.format));
  if (out.numel() == 0) return out;
  launch_scatter(op, out, in, relu);
  return out;
}

// In place when common/checks.h's can_scatter_in_place allows it; otherwise
// into a dense tensor of its own (base's dense copy when base is not dense),
// then copied into base on the same stream. With validate=True a bad index
// raises before anything is written.
at::Tensor& scatter_frames_inplace_cuda(at::Tensor& base, const at::Tensor& src_in,
                                        const at::Tensor& index_in,
                                        const std::optional<at::Tensor>& fill_in, bool relu,
                                        bool validate) {
  constexpr const char* op = "scatter_frames_";
  check_scatter_inplace_args(base, src_in, index_in, fill_in);
  const c10::cuda::CUDAGuard guard(base.device());
  const ScatterInputs in = prepare_scatter(op, base, src_in, index_in, fill_in, validate);
  if (base.numel() == 0) return base;
  at::Tensor out = base;
  if (!can_scatter_in_place(base, in.base, in.src, in.fill)) {
    out = in.base.is_same(base) ? at::empty(in.base.sizes(), in.base.options().memory_format(in.format))
                                : in.base;
  }
  launch_scatter(op, out, in, relu);
  if (!out.is_same(base)) base.copy_(out);
  return base;
}

}  // namespace
}  // namespace cuda
}  // namespace afnet_kernels

TORCH_LIBRARY_IMPL(afnet_kernels, CUDA, m) {
  m.impl("select_frames", &afnet_kernels::cuda::select_frames_cuda);
  m.impl("gather_frames", &afnet_kernels::cuda::gather_frames_cuda);
  m.impl("_gather_frames_backward", &afnet_kernels::cuda::gather_frames_backward_cuda);
  m.impl("scatter_frames", &afnet_kernels::cuda::scatter_frames_cuda);
  m.impl("scatter_frames_", &afnet_kernels::cuda::scatter_frames_inplace_cuda);
}

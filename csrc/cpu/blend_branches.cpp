// CPU branch fusion: blend_branches, its backward, and pool_branches.
//
// The nearest upsampling of the ample branch is folded into the indexing
// (nearest_source_index forward, nearest_target_begin for the preimages, both
// shared with CUDA): up(ample) is never built. The
// forward passes stream focal and out once and are vectorized along the
// contiguous dimension (the H*W plane for contiguous, C for channels_last).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/indexing.h"
#include "cpu/elementwise.h"
#include "cpu/row_spans.h"

namespace afnet_kernels {
namespace cpu {
namespace {

// Source index along one axis for every destination index.
std::vector<int64_t> nearest_table(int64_t in_size, int64_t out_size) {
  std::vector<int64_t> table(out_size);
  for (int64_t d = 0; d < out_size; ++d) table[d] = nearest_source_index(d, in_size, out_size);
  return table;
}

// How many destination indices read each source index (preimage_size, shared
// with CUDA's pooling).
std::vector<int64_t> nearest_counts(int64_t in_size, int64_t out_size) {
  std::vector<int64_t> counts(in_size);
  for (int64_t s = 0; s < in_size; ++s) counts[s] = preimage_size(s, in_size, out_size);
  return counts;
}

// Sizes and upsampling tables of an (ample, focal) pair.
struct BranchGeometry {
  int64_t rows, channels, h, w, H, W;
  std::vector<int64_t> src_y, src_x;

  BranchGeometry(const at::Tensor& ample, const at::Tensor& focal)
      : rows(focal.size(0)),
        channels(focal.size(1)),
        h(ample.size(2)),
        w(ample.size(3)),
        H(focal.size(2)),
        W(focal.size(3)),
        src_y(nearest_table(h, H)),
        src_x(nearest_table(w, W)) {}
};

// theta [N*T, C] or [N*T, C, 1, 1] as a dense [N*T, C].
at::Tensor theta_matrix(const at::Tensor& theta) {
  return theta.reshape({theta.size(0), theta.size(1)}).contiguous();
}

// out[i] = finish(t[i] * a[i] + (1 - t[i]) * f[i]); t is a scalar or a vector.
template <bool kRelu, typename scalar_t, typename Theta>
inline void blend_into(scalar_t* __restrict out, const Theta& theta,
                       const scalar_t* __restrict a, const scalar_t* __restrict f, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    const opmath_t t = theta(i);
    out[i] = static_cast<scalar_t>(
        finish<kRelu>(t * opmath_t(a[i]) + (opmath_t(1) - t) * opmath_t(f[i])));
  }
}

// Contiguous: one (row, channel) plane per task. The plane of up(ample) is
// built in a small buffer that stays in cache (a line repeated by the
// upsampling is copied, not gathered again), then blended in one straight loop
// over H*W, long enough to vectorize well even at 14x14.
template <bool kRelu, typename scalar_t>
void blend_contiguous(scalar_t* out, const scalar_t* ample, const scalar_t* focal,
                      const scalar_t* theta, const BranchGeometry& g) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t plane = g.H * g.W;
  const int64_t grain = std::max<int64_t>(1, kSpanGrain / std::max<int64_t>(1, plane));
  at::parallel_for(0, g.rows * g.channels, grain, [&](int64_t lo, int64_t hi) {
    std::vector<scalar_t> up(plane);
    for (int64_t p = lo; p < hi; ++p) {
      const scalar_t* a = ample + p * g.h * g.w;
      for (int64_t y = 0; y < g.H; ++y) {
        scalar_t* up_line = up.data() + y * g.W;
        if (y > 0 && g.src_y[y] == g.src_y[y - 1]) {
          std::copy(up_line - g.W, up_line, up_line);
          continue;
        }
        const scalar_t* a_line = a + g.src_y[y] * g.w;
        for (int64_t x = 0; x < g.W; ++x) up_line[x] = a_line[g.src_x[x]];
      }
      const opmath_t t = opmath_t(theta[p]);
      blend_into<kRelu>(out + p * plane, [t](int64_t) { return t; }, up.data(),
                        focal + p * plane, plane);
    }
  });
}

// channels_last: one pixel per step, vectorized along C.
template <bool kRelu, typename scalar_t>
void blend_channels_last(scalar_t* out, const scalar_t* ample, const scalar_t* focal,
                         const scalar_t* theta, const BranchGeometry& g) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t C = g.channels;
  const int64_t grain = std::max<int64_t>(1, kSpanGrain / std::max<int64_t>(1, C));
  at::parallel_for(0, g.rows * g.H * g.W, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t pix = lo; pix < hi; ++pix) {
      const int64_t n = pix / (g.H * g.W);
      const int64_t yx = pix - n * g.H * g.W;
      const int64_t y = yx / g.W;
      const int64_t x = yx - y * g.W;
      const scalar_t* a = ample + ((n * g.h + g.src_y[y]) * g.w + g.src_x[x]) * C;
      const scalar_t* t = theta + n * C;
      blend_into<kRelu>(out + pix * C, [t](int64_t c) { return opmath_t(t[c]); }, a,
                        focal + pix * C, C);
    }
  });
}

template <bool kRelu, typename scalar_t>
void blend_rows(at::Tensor& out, const at::Tensor& ample, const at::Tensor& focal,
                const at::Tensor& theta, const BranchGeometry& g, at::MemoryFormat format) {
  const auto run = format == at::MemoryFormat::ChannelsLast ? &blend_channels_last<kRelu, scalar_t>
                                                            : &blend_contiguous<kRelu, scalar_t>;
  run(out.data_ptr<scalar_t>(), ample.const_data_ptr<scalar_t>(),
      focal.const_data_ptr<scalar_t>(), theta.const_data_ptr<scalar_t>(), g);
}

at::Tensor blend_branches_cpu(const at::Tensor& ample_in, const at::Tensor& focal_in,
                              const at::Tensor& theta_in, bool relu) {
  check_blend_args(ample_in, focal_in, theta_in);
  const auto format = memory_format_of(focal_in);
  const at::Tensor focal = focal_in.contiguous(format);
  const at::Tensor ample = ample_in.contiguous(format);
  const at::Tensor theta = theta_matrix(theta_in);
  at::Tensor out = at::empty_like(focal, focal.options().memory_format(format));
  if (out.numel() == 0) return out;
  const BranchGeometry g(ample, focal);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, focal.scalar_type(), "blend_branches_cpu", [&] {
        if (relu) {
          blend_rows<true, scalar_t>(out, ample, focal, theta, g, format);
        } else {
          blend_rows<false, scalar_t>(out, ample, focal, theta, g, format);
        }
      });
  return out;
}

// Preimage boundaries of nearest upsampling along one axis: the outputs that
// read input i are [begin[i], begin[i + 1]) (nearest_target_begin, the walk
// the CUDA kernels make).
std::vector<int64_t> preimage_bounds(int64_t in_size, int64_t out_size) {
  std::vector<int64_t> begin(in_size + 1);
  for (int64_t i = 0; i <= in_size; ++i) begin[i] = nearest_target_begin(i, in_size, out_size);
  return begin;
}

// The backward walks each ample pixel's preimage, as the CUDA kernels do: the
// preimages partition the focal pixels, so every focal element is visited
// once, and the sums of an ample pixel are complete when its walk ends.
//   grad_focal = (1−θ)·g,  grad_ample[s] = θ · Σ_{preimage of s} g,
//   grad_theta = Σ_{H,W} g·(up(ample) − focal),  g = grad through the ReLU.
std::tuple<at::Tensor, at::Tensor, at::Tensor> blend_branches_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& out_in, const at::Tensor& ample_in,
    const at::Tensor& focal_in, const at::Tensor& theta_in, bool relu) {
  check_blend_backward_args(grad_in, out_in, ample_in, focal_in, theta_in);
  const auto format = memory_format_of(focal_in);
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor out = out_in.contiguous(format);
  const at::Tensor focal = focal_in.contiguous(format);
  const at::Tensor ample = ample_in.contiguous(format);
  const at::Tensor theta = theta_matrix(theta_in);
  const BranchGeometry g(ample, focal);
  const std::vector<int64_t> rows_of = preimage_bounds(g.h, g.H);
  const std::vector<int64_t> cols_of = preimage_bounds(g.w, g.W);

  at::Tensor d_focal = at::empty_like(focal, focal.options().memory_format(format));
  at::Tensor d_ample = at::empty_like(ample, ample.options().memory_format(format));
  at::Tensor d_theta = at::empty_like(theta);
  const int64_t C = g.channels;
  const bool last = format == at::MemoryFormat::ChannelsLast;
  // Offsets of (c, y, x) in a dense row: [C, H, W] or [H, W, C].
  const auto focal_at = [&](int64_t c, int64_t y, int64_t x) {
    return last ? (y * g.W + x) * C + c : (c * g.H + y) * g.W + x;
  };
  const auto ample_at = [&](int64_t c, int64_t i, int64_t j) {
    return last ? (i * g.w + j) * C + c : (c * g.h + i) * g.w + j;
  };

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, focal.scalar_type(), "_blend_branches_backward_cpu", [&] {
        using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
        const int64_t focal_row = C * g.H * g.W, ample_row = C * g.h * g.w;
        // Rows are independent; within a row one thread owns every sum, so
        // the reduction order is fixed.
        at::parallel_for(0, g.rows, 1, [&](int64_t lo, int64_t hi) {
          std::vector<acc_t> sum_theta(C);
          for (int64_t n = lo; n < hi; ++n) {
            const scalar_t* gp = grad.const_data_ptr<scalar_t>() + n * focal_row;
            const scalar_t* op = out.const_data_ptr<scalar_t>() + n * focal_row;
            const scalar_t* fp = focal.const_data_ptr<scalar_t>() + n * focal_row;
            const scalar_t* ap = ample.const_data_ptr<scalar_t>() + n * ample_row;
            const scalar_t* th = theta.const_data_ptr<scalar_t>() + n * C;
            scalar_t* dfp = d_focal.data_ptr<scalar_t>() + n * focal_row;
            scalar_t* dap = d_ample.data_ptr<scalar_t>() + n * ample_row;
            std::fill(sum_theta.begin(), sum_theta.end(), acc_t(0));
            // One ample element (c, i, j): its preimage rows, then columns.
            const auto walk = [&](int64_t c, int64_t i, int64_t j) {
              const acc_t t = th[c];
              const acc_t a = ap[ample_at(c, i, j)];
              acc_t sum = 0;
              for (int64_t y = rows_of[i]; y < rows_of[i + 1]; ++y) {
                for (int64_t x = cols_of[j]; x < cols_of[j + 1]; ++x) {
                  const int64_t e = focal_at(c, y, x);
                  const acc_t gm = relu && !(op[e] > scalar_t(0)) ? acc_t(0) : acc_t(gp[e]);
                  dfp[e] = static_cast<scalar_t>(gm * (acc_t(1) - t));
                  sum_theta[c] += gm * (a - acc_t(fp[e]));
                  sum += gm;
                }
              }
              dap[ample_at(c, i, j)] = static_cast<scalar_t>(t * sum);
            };
            // Ample elements in their memory order.
            if (last) {
              for (int64_t i = 0; i < g.h; ++i)
                for (int64_t j = 0; j < g.w; ++j)
                  for (int64_t c = 0; c < C; ++c) walk(c, i, j);
            } else {
              for (int64_t c = 0; c < C; ++c)
                for (int64_t i = 0; i < g.h; ++i)
                  for (int64_t j = 0; j < g.w; ++j) walk(c, i, j);
            }
            scalar_t* dtp = d_theta.data_ptr<scalar_t>() + n * C;
            for (int64_t c = 0; c < C; ++c) dtp[c] = static_cast<scalar_t>(sum_theta[c]);
          }
        });
      });
  return {d_ample, d_focal, d_theta.reshape(theta_in.sizes())};
}

template <typename scalar_t>
void pool_rows(scalar_t* out, const at::Tensor& ample, const at::Tensor& focal,
               const BranchGeometry& g, at::MemoryFormat format) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
  using opmath_t = at::opmath_type<scalar_t>;
  // up(ample) repeats ample[i, j] count_y[i] * count_x[j] times.
  const std::vector<int64_t> count_y = nearest_counts(g.h, g.H);
  const std::vector<int64_t> count_x = nearest_counts(g.w, g.W);
  const int64_t C = g.channels;
  const int64_t focal_row = C * g.H * g.W, ample_row = C * g.h * g.w;
  const scalar_t* fp = focal.const_data_ptr<scalar_t>();
  const scalar_t* ap = ample.const_data_ptr<scalar_t>();
  const acc_t scale = acc_t(1) / acc_t(g.H * g.W);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  // Integer upsampling factors (the common case) repeat every ample pixel
  // equally often: the ample sum is then one plain reduction.
  const auto all_equal = [](const std::vector<int64_t>& v) {
    return std::all_of(v.begin(), v.end(), [&](int64_t x) { return x == v.front(); });
  };
  const bool uniform = g.h > 0 && g.w > 0 && all_equal(count_y) && all_equal(count_x);
  at::parallel_for(0, g.rows, 1, [&](int64_t lo, int64_t hi) {
    std::vector<acc_t> sums(C);
    std::vector<opmath_t> line(C);  // channels_last: one line's per-channel sums
    for (int64_t n = lo; n < hi; ++n) {
      const scalar_t* f = fp + n * focal_row;
      const scalar_t* a = ap + n * ample_row;
      if (!last) {
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* ac = a + c * g.h * g.w;
          acc_t s = sum_of<acc_t>(f + c * g.H * g.W, g.H * g.W);
          if (uniform) {
            s += acc_t(count_y[0] * count_x[0]) * sum_of<acc_t>(ac, g.h * g.w);
            out[n * C + c] = static_cast<scalar_t>(s * scale);
            continue;
          }
          for (int64_t i = 0; i < g.h; ++i) {
            opmath_t part = 0;
#pragma omp simd reduction(+ : part)
            for (int64_t j = 0; j < g.w; ++j) part += opmath_t(count_x[j]) * opmath_t(ac[i * g.w + j]);
            s += acc_t(count_y[i]) * acc_t(part);
          }
          out[n * C + c] = static_cast<scalar_t>(s * scale);
        }
        continue;
      }
      std::fill(sums.begin(), sums.end(), acc_t(0));
      const auto add_line = [&](const scalar_t* pixels, int64_t count, const int64_t* weights,
                                acc_t line_weight) {
        std::fill(line.begin(), line.end(), opmath_t(0));
        for (int64_t x = 0; x < count; ++x) {
          const opmath_t w = weights ? opmath_t(weights[x]) : opmath_t(1);
          const scalar_t* px = pixels + x * C;
          for (int64_t c = 0; c < C; ++c) line[c] += w * opmath_t(px[c]);
        }
        for (int64_t c = 0; c < C; ++c) sums[c] += line_weight * acc_t(line[c]);
      };
      for (int64_t y = 0; y < g.H; ++y) add_line(f + y * g.W * C, g.W, nullptr, acc_t(1));
      for (int64_t i = 0; i < g.h; ++i)
        add_line(a + i * g.w * C, g.w, count_x.data(), acc_t(count_y[i]));
      for (int64_t c = 0; c < C; ++c) out[n * C + c] = static_cast<scalar_t>(sums[c] * scale);
    }
  });
}

at::Tensor pool_branches_cpu(const at::Tensor& ample_in, const at::Tensor& focal_in) {
  check_pool_args(ample_in, focal_in);
  const auto format = memory_format_of(focal_in);
  const at::Tensor focal = focal_in.contiguous(format);
  const at::Tensor ample = ample_in.contiguous(format);
  at::Tensor out = at::empty({focal.size(0), focal.size(1)}, focal.options());
  if (out.numel() == 0) return out;
  if (focal.size(2) * focal.size(3) == 0) return out.fill_(NAN);  // mean of nothing
  const BranchGeometry g(ample, focal);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, focal.scalar_type(),
                                  "pool_branches_cpu", [&] {
                                    pool_rows<scalar_t>(out.data_ptr<scalar_t>(), ample, focal, g,
                                                        format);
                                  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afnet_kernels, CPU, m) {
  m.impl("blend_branches", &blend_branches_cpu);
  m.impl("_blend_branches_backward", &blend_branches_backward_cpu);
  m.impl("pool_branches", &pool_branches_cpu);
}

}  // namespace cpu
}  // namespace afnet_kernels

// Work splitting shared by the CPU kernels.
//
// Every op here reads and writes whole frames (rows of [rows, C, H, W]). A row
// is one dense block of C*H*W elements in both supported layouts, so the
// kernels walk flat element ranges of rows and only need the layout to know
// which channel an element belongs to (FrameLayout, shared with CUDA).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "common/indexing.h"

namespace afnet_kernels {
namespace cpu {

using Layout = FrameLayout<int64_t>;

// The layout of a row of `t` ([rows, C, H, W], dense in `format`).
inline Layout layout_of(const at::Tensor& t, at::MemoryFormat format) {
  return {t.size(1), t.size(2) * t.size(3), format == at::MemoryFormat::ChannelsLast};
}

// The fill of a scatter as the kernels read it: per channel [C], or one whole
// row laid out like a row of base ([C, H, W] contiguous, [H, W, C] for
// channels_last).
inline at::Tensor fill_in_row_layout(const at::Tensor& fill, at::MemoryFormat format) {
  if (fill.dim() == 1 || format != at::MemoryFormat::ChannelsLast) return fill.contiguous();
  return fill.permute({1, 2, 0}).contiguous();
}

// Elements per task: large enough to amortize the task, small enough that two
// cores share even a single frame.
constexpr int64_t kSpanGrain = int64_t{1} << 15;

// Calls fn(row, begin, end) over [0, rows) x [0, row_numel) in parallel, each
// call covering the element range [begin, end) of one row.
template <typename Fn>
void parallel_row_spans(int64_t rows, int64_t row_numel, const Fn& fn) {
  if (rows == 0 || row_numel == 0) return;
  at::parallel_for(0, rows * row_numel, kSpanGrain, [&](int64_t lo, int64_t hi) {
    while (lo < hi) {
      const int64_t row = lo / row_numel;
      const int64_t begin = lo - row * row_numel;
      const int64_t end = std::min(row_numel, begin + (hi - lo));
      fn(row, begin, end);
      lo += end - begin;
    }
  });
}

// Splits the element range [begin, end) of a row into runs whose channels all
// fall into one TSM class ([0, fold), [fold, 2*fold), [2*fold, C)) and calls
// fn(run_begin, run_end, first_channel). With fold == 0 the whole range is one
// run (channel 0's class, which is every channel).
template <typename Fn>
void for_each_shift_run(int64_t begin, int64_t end, const Layout& layout, int64_t fold,
                        const Fn& fn) {
  if (fold == 0) {
    if (begin < end) fn(begin, end, int64_t{0});
    return;
  }
  for (int64_t p = begin; p < end;) {
    const int64_t c = layout.channel(p);
    const int64_t class_end = shift_class_end(c, fold, layout.channels);
    const int64_t stop = std::min(end, layout.channel_run_end(p, class_end));
    fn(p, stop, c);
    p = stop;
  }
}

}  // namespace cpu
}  // namespace afnet_kernels

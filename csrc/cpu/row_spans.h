// Work splitting shared by the CPU kernels.
//
// Every op here reads and writes whole frames (rows of [rows, C, H, W]). A row
// is one dense block of C*H*W elements in both supported layouts, so the
// kernels walk flat element ranges of rows and only need the layout to know
// which channel an element belongs to:
//   contiguous:    row = 1   x C x (H*W)   (outer x channels x inner)
//   channels_last: row = H*W x C x 1
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "common/checks.h"

namespace afnet_kernels {
namespace cpu {

struct RowLayout {
  int64_t channels;  // C
  int64_t inner;     // elements per channel run: H*W (contiguous) or 1 (channels_last)
  int64_t block() const { return channels * inner; }

  static RowLayout of(const at::Tensor& t, at::MemoryFormat format) {
    const bool last = format == at::MemoryFormat::ChannelsLast;
    return {t.size(1), last ? int64_t{1} : t.size(2) * t.size(3)};
  }
};

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
// fn(run_begin, run_end, first_channel). With fold == 0, runs span whole
// blocks of the layout.
template <typename Fn>
void for_each_shift_run(int64_t begin, int64_t end, const RowLayout& layout, int64_t fold,
                        const Fn& fn) {
  const int64_t block = layout.block();
  int64_t p = begin;
  while (p < end) {
    const int64_t within = p % block;
    const int64_t c = within / layout.inner;
    const int64_t class_end = c < fold ? fold : (c < 2 * fold ? 2 * fold : layout.channels);
    const int64_t stop = std::min(end, p - within + class_end * layout.inner);
    fn(p, stop, c);
    p = stop;
  }
}

// Validates index values against `limit` rows (the CPU kernels read them anyway).
inline void check_index_values(const char* op, const int64_t* index, int64_t count,
                               int64_t limit) {
  for (int64_t k = 0; k < count; ++k) check_index_value(op, k, index[k], limit);
}

}  // namespace cpu
}  // namespace afnet_kernels

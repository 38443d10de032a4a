// CPU gather_frames and its backward.
//
// Forward: each output element has exactly one source element (or a zero at a
// clip edge), so the kernel is a series of memcpy/memset runs: one per frame
// span without shift, three per channel block with shift. It moves bytes only
// and works for every dtype.
//
// Backward: a scatter-add written as a gather through the inverse shift, so
// every output element has one writer and the result is deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "common/checks.h"
#include "common/indexing.h"
#include "cpu/row_spans.h"

namespace afnet_kernels {
namespace cpu {
namespace {

// Channel structure the shift runs need; no shift moves whole rows at once.
RowLayout run_layout(const at::Tensor& t, at::MemoryFormat format, int64_t fold) {
  const int64_t row_numel = t.size(1) * t.size(2) * t.size(3);
  return fold > 0 ? RowLayout::of(t, format) : RowLayout{1, row_numel};
}

at::Tensor gather_frames_cpu(const at::Tensor& x_in, const at::Tensor& index_in,
                             int64_t num_segments, int64_t shift_div) {
  check_gather_args(x_in, index_in, num_segments, shift_div);
  const auto format = memory_format_of(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  check_index_values("gather_frames", idx, count, x.size(0));

  at::Tensor out =
      at::empty({count, x.size(1), x.size(2), x.size(3)}, x.options().memory_format(format));
  const int64_t row_numel = x.size(1) * x.size(2) * x.size(3);
  const int64_t fold = shift_fold(x.size(1), shift_div);
  const RowLayout layout = run_layout(x, format, fold);
  const int64_t item = x.element_size();
  const char* src = static_cast<const char*>(x.const_data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());

  parallel_row_spans(count, row_numel, [&](int64_t k, int64_t begin, int64_t end) {
    char* out_row = dst + k * row_numel * item;
    for_each_shift_run(begin, end, layout, fold, [&](int64_t p, int64_t stop, int64_t c) {
      const int64_t from = shifted_source_row(idx[k], c, fold, num_segments);
      const int64_t bytes = (stop - p) * item;
      if (from < 0) {
        std::memset(out_row + p * item, 0, bytes);
      } else {
        std::memcpy(out_row + p * item, src + (from * row_numel + p) * item, bytes);
      }
    });
  });
  return out;
}

// Rows of `index` grouped by value (CSR): the entries reading row r are
// order[start[r] .. start[r + 1]), ascending. Duplicates are allowed.
struct RowReaders {
  std::vector<int64_t> start;
  std::vector<int64_t> order;

  RowReaders(const int64_t* idx, int64_t count, int64_t rows) : start(rows + 1, 0), order(count) {
    for (int64_t k = 0; k < count; ++k) ++start[idx[k] + 1];
    for (int64_t r = 0; r < rows; ++r) start[r + 1] += start[r];
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t k = 0; k < count; ++k) order[next[idx[k]]++] = k;
  }
};

at::Tensor gather_frames_backward_cpu(const at::Tensor& grad_in, const at::Tensor& index_in,
                                      int64_t num_rows, int64_t num_segments,
                                      int64_t shift_div) {
  check_gather_backward_args(grad_in, index_in, num_rows, num_segments, shift_div);
  const auto format = memory_format_of(grad_in);
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  check_index_values("_gather_frames_backward", idx, count, num_rows);
  const RowReaders readers(idx, count, num_rows);

  at::Tensor out = at::empty({num_rows, grad.size(1), grad.size(2), grad.size(3)},
                             grad.options().memory_format(format));
  const int64_t row_numel = grad.size(1) * grad.size(2) * grad.size(3);
  const int64_t fold = shift_fold(grad.size(1), shift_div);
  const RowLayout layout = run_layout(grad, format, fold);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "_gather_frames_backward_cpu", [&] {
        const scalar_t* g = grad.const_data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        parallel_row_spans(num_rows, row_numel, [&](int64_t r, int64_t begin, int64_t end) {
          scalar_t* out_row = o + r * row_numel;
          for_each_shift_run(begin, end, layout, fold, [&](int64_t p, int64_t stop, int64_t c) {
            const int64_t reader = shifted_target_row(r, c, fold, num_segments);
            const int64_t first = reader < 0 ? 0 : readers.start[reader];
            const int64_t last = reader < 0 ? 0 : readers.start[reader + 1];
            if (first == last) {
              std::fill(out_row + p, out_row + stop, scalar_t(0));
              return;
            }
            const scalar_t* g0 = g + readers.order[first] * row_numel;
            std::copy(g0 + p, g0 + stop, out_row + p);
            for (int64_t j = first + 1; j < last; ++j) {
              const scalar_t* gj = g + readers.order[j] * row_numel;
              for (int64_t e = p; e < stop; ++e) out_row[e] += gj[e];
            }
          });
        });
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afnet_kernels, CPU, m) {
  m.impl("gather_frames", &gather_frames_cpu);
  m.impl("_gather_frames_backward", &gather_frames_backward_cpu);
}

}  // namespace cpu
}  // namespace afnet_kernels

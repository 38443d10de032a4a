// CPU gather_frames and its backward.
//
// Forward: each output element has exactly one source element (or a zero at a
// clip edge or for a padding entry), so the kernel is a series of
// memcpy/memset runs: one per frame span without shift, three per channel
// block with shift. It moves bytes only and works for every dtype.
//
// Backward: a scatter-add written as a gather through the inverse shift, so
// every output element has one writer and the result is deterministic (rows
// named several times by the index add their gradients in index order).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cstring>

#include "common/checks.h"
#include "common/indexing.h"
#include "common/validate.h"
#include "cpu/elementwise.h"
#include "cpu/row_spans.h"
#include "cpu/slot_readers.h"

namespace afnet_kernels {
namespace cpu {
namespace {

// The CPU reads every index value anyway, so it validates whatever `validate`
// says (the flag only spares CUDA its device->host read).
at::Tensor gather_frames_cpu(const at::Tensor& x_in, const at::Tensor& index_in,
                             int64_t num_segments, int64_t shift_div, bool /*validate*/) {
  check_gather_args(x_in, index_in, num_segments, shift_div);
  const auto format = memory_format_of(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  validate_index(frame_index_rule("gather_frames", x.size(0), "rows of x", false), idx, count);

  at::Tensor out =
      at::empty({count, x.size(1), x.size(2), x.size(3)}, x.options().memory_format(format));
  const int64_t row_numel = x.size(1) * x.size(2) * x.size(3);
  const int64_t fold = shift_fold(x.size(1), shift_div);
  const Layout layout = layout_of(x, format);
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

at::Tensor gather_frames_backward_cpu(const at::Tensor& grad_in, const at::Tensor& index_in,
                                      int64_t num_rows, int64_t num_segments, int64_t shift_div,
                                      bool /*validate*/) {
  check_gather_backward_args(grad_in, index_in, num_rows, num_segments, shift_div);
  const auto format = memory_format_of(grad_in);
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  validate_index(frame_index_rule("_gather_frames_backward", num_rows, "num_rows", false), idx,
                 count);
  const SlotReaders readers(idx, count, num_rows);

  at::Tensor out = at::empty({num_rows, grad.size(1), grad.size(2), grad.size(3)},
                             grad.options().memory_format(format));
  const int64_t row_numel = grad.size(1) * grad.size(2) * grad.size(3);
  const int64_t fold = shift_fold(grad.size(1), shift_div);
  const Layout layout = layout_of(grad, format);

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
              accumulate_into(out_row + p, gj + p, stop - p);
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

// CPU scatter_frames: out[r] = base[r] + (src[inverse[r]] or fill), ReLU last.
//
// The kernel walks the *output* rows through an inverse index (built by
// common/validate.h's host_inverse, with the CUDA kernels' enter_inverse), so
// every output element has one writer (deterministic, no atomics) and the
// fill, the residual add and the ReLU are one pass over memory. Padding
// entries (-1) of the index name no row.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/validate.h"
#include "cpu/elementwise.h"
#include "cpu/row_spans.h"

namespace afnet_kernels {
namespace cpu {
namespace {

template <typename scalar_t, bool kRelu>
void scatter_rows(at::Tensor& out, const at::Tensor& base, const at::Tensor& src,
                  const std::vector<int64_t>& inverse, const std::optional<at::Tensor>& fill,
                  const Layout& layout) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t row_numel = base.size(1) * base.size(2) * base.size(3);
  const scalar_t* b = base.const_data_ptr<scalar_t>();
  const scalar_t* s = src.const_data_ptr<scalar_t>();
  const scalar_t* f = fill ? fill->const_data_ptr<scalar_t>() : nullptr;
  const bool per_channel = fill && fill->dim() == 1;
  scalar_t* o = out.data_ptr<scalar_t>();

  parallel_row_spans(base.size(0), row_numel, [&](int64_t r, int64_t begin, int64_t end) {
    const int64_t offset = r * row_numel;
    scalar_t* out_p = o + offset;
    const scalar_t* base_p = b + offset;
    const int64_t k = inverse[r];
    if (k >= 0) {
      add_into<kRelu>(out_p + begin, base_p + begin, s + k * row_numel + begin, end - begin);
    } else if (f == nullptr) {
      copy_into<kRelu>(out_p + begin, base_p + begin, end - begin);
    } else if (!per_channel) {
      add_into<kRelu>(out_p + begin, base_p + begin, f + begin, end - begin);
    } else {
      for (int64_t p = begin; p < end;) {
        const int64_t c = layout.channel(p);
        if (layout.channels_last) {
          // The rest of p's pixel: channels c.. are adjacent, like the fill.
          const int64_t stop = std::min(end, layout.channel_run_end(p, layout.channels));
          add_into<kRelu>(out_p + p, base_p + p, f + c, stop - p);
          p = stop;
        } else {
          // The rest of channel c's plane: one fill value.
          const int64_t stop = std::min(end, layout.channel_run_end(p, c + 1));
          add_scalar_into<kRelu>(out_p + p, base_p + p, static_cast<opmath_t>(f[c]), stop - p);
          p = stop;
        }
      }
    }
  });
}

// Validates whatever `validate` says: building the inverse checks every value.
at::Tensor scatter_frames_cpu(const at::Tensor& base_in, const at::Tensor& src_in,
                              const at::Tensor& index_in, const std::optional<at::Tensor>& fill_in,
                              bool relu, bool /*validate*/) {
  check_scatter_args(base_in, src_in, index_in, fill_in);
  const auto format = memory_format_of(base_in);
  const at::Tensor base = base_in.contiguous(format);
  const at::Tensor src = src_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const std::vector<int64_t> inverse =
      host_inverse(frame_index_rule("scatter_frames", base.size(0), "rows of base", true),
                   index.data_ptr<int64_t>(), index.size(0));
  std::optional<at::Tensor> fill;
  if (fill_in.has_value() && fill_in->defined()) fill = fill_in_row_layout(*fill_in, format);

  at::Tensor out = at::empty_like(base, base.options().memory_format(format));
  const Layout layout = layout_of(base, format);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, base.scalar_type(),
                                  "scatter_frames_cpu", [&] {
                                    if (relu) {
                                      scatter_rows<scalar_t, true>(out, base, src, inverse, fill,
                                                                   layout);
                                    } else {
                                      scatter_rows<scalar_t, false>(out, base, src, inverse, fill,
                                                                    layout);
                                    }
                                  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afnet_kernels, CPU, m) { m.impl("scatter_frames", &scatter_frames_cpu); }

}  // namespace cpu
}  // namespace afnet_kernels

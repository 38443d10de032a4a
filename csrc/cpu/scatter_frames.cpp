// CPU scatter_frames: out[r] = base[r] + (src[inverse[r]] or fill), ReLU last;
// and scatter_frames_, the same written into base (out = base).
//
// The kernel walks the *output* rows through an inverse index (built by
// common/validate.h's host_inverse, with the CUDA kernels' enter_inverse), so
// every output element has one writer (deterministic, no atomics) and the
// fill, the residual add and the ReLU are one pass over memory. Padding
// entries (-1) of the index name no row. In place, each element is read and
// then written by the same iteration (elementwise.h's aliasing contract), and
// a row that gets neither src, fill nor ReLU is not touched at all.
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

// `out` is dense like base and may be base itself (scatter_frames_); src and
// fill share no memory with it.
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

// What the row kernel reads: base and src dense in base's memory format, the
// fill in row layout, and the inverse of the index. Building the inverse
// checks every index value, whatever `validate` says (the CPU reads them anyway).
struct ScatterInputs {
  at::MemoryFormat format;
  at::Tensor base;
  at::Tensor src;
  std::optional<at::Tensor> fill;
  std::vector<int64_t> inverse;
};

ScatterInputs prepare_scatter(const char* op, const at::Tensor& base_in, const at::Tensor& src_in,
                              const at::Tensor& index_in,
                              const std::optional<at::Tensor>& fill_in) {
  ScatterInputs in;
  in.format = memory_format_of(base_in);
  in.base = base_in.contiguous(in.format);
  in.src = src_in.contiguous(in.format);
  const at::Tensor index = index_in.contiguous();
  in.inverse = host_inverse(frame_index_rule(op, in.base.size(0), "rows of base", true),
                            index.data_ptr<int64_t>(), index.size(0));
  if (fill_in.has_value() && fill_in->defined()) in.fill = fill_in_row_layout(*fill_in, in.format);
  return in;
}

// Writes the rows of `out` (dense in in.format; may be in.base itself).
void write_rows(at::Tensor& out, const ScatterInputs& in, bool relu) {
  const Layout layout = layout_of(in.base, in.format);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.base.scalar_type(),
                                  "scatter_frames_cpu", [&] {
                                    if (relu) {
                                      scatter_rows<scalar_t, true>(out, in.base, in.src,
                                                                   in.inverse, in.fill, layout);
                                    } else {
                                      scatter_rows<scalar_t, false>(out, in.base, in.src,
                                                                    in.inverse, in.fill, layout);
                                    }
                                  });
}

at::Tensor scatter_frames_cpu(const at::Tensor& base_in, const at::Tensor& src_in,
                              const at::Tensor& index_in, const std::optional<at::Tensor>& fill_in,
                              bool relu, bool /*validate*/) {
  check_scatter_args("scatter_frames", base_in, src_in, index_in, fill_in);
  const ScatterInputs in = prepare_scatter("scatter_frames", base_in, src_in, index_in, fill_in);
  at::Tensor out = at::empty_like(in.base, in.base.options().memory_format(in.format));
  write_rows(out, in, relu);
  return out;
}

// In place when common/checks.h's can_scatter_in_place allows it; otherwise
// into a dense tensor of its own (base's dense copy when base is not dense),
// then copied into base. Index values are checked before anything is written.
at::Tensor& scatter_frames_inplace_cpu(at::Tensor& base, const at::Tensor& src_in,
                                       const at::Tensor& index_in,
                                       const std::optional<at::Tensor>& fill_in, bool relu,
                                       bool /*validate*/) {
  check_scatter_inplace_args(base, src_in, index_in, fill_in);
  const ScatterInputs in = prepare_scatter("scatter_frames_", base, src_in, index_in, fill_in);
  at::Tensor out = base;
  if (!can_scatter_in_place(base, in.base, in.src, in.fill.value_or(at::Tensor()))) {
    out = in.base.is_same(base)
              ? at::empty_like(in.base, in.base.options().memory_format(in.format))
              : in.base;
  }
  write_rows(out, in, relu);
  if (!out.is_same(base)) base.copy_(out);
  return base;
}

}  // namespace

TORCH_LIBRARY_IMPL(afnet_kernels, CPU, m) {
  m.impl("scatter_frames", &scatter_frames_cpu);
  m.impl("scatter_frames_", &scatter_frames_inplace_cpu);
}

}  // namespace cpu
}  // namespace afnet_kernels

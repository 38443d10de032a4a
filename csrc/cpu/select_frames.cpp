// CPU select_frames: one pass over the (small) [N, T] mask.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/indexing.h"
#include "common/validate.h"

namespace afnet_kernels {
namespace cpu {
namespace {

// num_selected is checked whatever `validate` says: the count is on the host.
std::tuple<at::Tensor, at::Tensor> select_frames_cpu(const at::Tensor& mask,
                                                     std::optional<int64_t> num_selected,
                                                     bool /*validate*/) {
  check_select_args(mask, num_selected);
  const at::Tensor selected = mask.ne(0).reshape(-1).contiguous();
  const int64_t rows = selected.numel();
  const bool* sel = selected.const_data_ptr<bool>();

  at::Tensor inverse = at::empty({rows}, mask.options().dtype(at::kLong));
  int64_t* inv = inverse.data_ptr<int64_t>();
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t before = count;
    count += sel[r] ? 1 : 0;
    inv[r] = selected_position(count, before);
  }
  if (num_selected.has_value()) validate_num_selected(*num_selected, count, rows);

  // Padding-bucket mode: entries past the selected rows are -1.
  at::Tensor index = at::full({num_selected.value_or(count)}, kPadding, inverse.options());
  int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    if (inv[r] >= 0) idx[inv[r]] = r;
  }
  return {index, inverse};
}

}  // namespace

TORCH_LIBRARY_IMPL(afnet_kernels, CPU, m) { m.impl("select_frames", &select_frames_cpu); }

}  // namespace cpu
}  // namespace afnet_kernels

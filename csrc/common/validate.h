// Host validation of index *values*, shared by both devices so that the same
// bad index gets the same message on CPU and CUDA.
//
// The CPU kernels call these on the index they are about to read. The CUDA
// entry points check the values on the device first (one flag), read the flag
// back only when the caller asks for validation, and, if it is set, copy the
// index to the host and call the same function here, which throws.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "common/indexing.h"

namespace afnet_kernels {

// How an op's index may look: values -1 (padding) or in [0, limit); `distinct`
// forbids two entries naming the same slot (scatters: one writer each).
struct IndexRule {
  const char* op;
  const char* noun;   // what an index value names: "row" or "cell"
  int64_t limit;      // number of addressable slots
  std::string limit_what;  // says where `limit` comes from, e.g. "rows of x"
  bool distinct;
};

inline std::string describe_limit(const IndexRule& rule) {
  std::ostringstream text;
  text << rule.limit << " (" << rule.limit_what << ")";
  return text.str();
}

[[noreturn]] inline void fail_out_of_range(const IndexRule& rule, int64_t k, int64_t value) {
  TORCH_CHECK(false, rule.op, ": index[", k, "]=", value,
              " is out of range: expected -1 (padding) or 0 <= index < ", describe_limit(rule));
  __builtin_unreachable();
}

[[noreturn]] inline void fail_repeated(const IndexRule& rule, int64_t first, int64_t second,
                                       int64_t value) {
  TORCH_CHECK(false, rule.op, ": index must be distinct (apart from -1 padding), got ", rule.noun,
              " ", value, " at index[", first, "] and index[", second, "]");
  __builtin_unreachable();
}

// The inverse map [limit] of a host index (position of each slot in `index`,
// or -1), built with the same enter_inverse the CUDA kernels use. Throws at the
// first bad entry in index order: out of range, or (rule.distinct) repeated.
inline std::vector<int64_t> host_inverse(const IndexRule& rule, const int64_t* index,
                                         int64_t count) {
  std::vector<int64_t> inverse(static_cast<size_t>(rule.limit), -1);
  for (int64_t k = 0; k < count; ++k) {
    int64_t previous = -1;
    const int64_t status = enter_inverse(inverse.data(), rule.limit, k, index[k], &previous);
    if (status == kIndexOutOfRange) fail_out_of_range(rule, k, index[k]);
    if (status == kIndexRepeated && rule.distinct) fail_repeated(rule, previous, k, index[k]);
  }
  return inverse;
}

// Checks index values against `rule` (range; distinctness if the rule asks).
inline void validate_index(const IndexRule& rule, const int64_t* index, int64_t count) {
  if (rule.distinct) {
    host_inverse(rule, index, count);
    return;
  }
  for (int64_t k = 0; k < count; ++k) {
    if (index[k] != kPadding && !in_range(index[k], rule.limit)) {
      fail_out_of_range(rule, k, index[k]);
    }
  }
}

// select_frames: the caller's num_selected must hold every selected frame.
inline void validate_num_selected(int64_t num_selected, int64_t count, int64_t rows) {
  TORCH_CHECK(num_selected >= count, "select_frames: num_selected=", num_selected,
              " is smaller than the number of frames the mask selects (", count, " of ", rows,
              "); pass None, or a value >= ", count, " (entries past ", count,
              " are -1 padding)");
}

}  // namespace afnet_kernels

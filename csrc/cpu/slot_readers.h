// Index entries grouped by the slot (row or cell) they name, for the CPU
// backward kernels that sum every entry reading a slot in a fixed order.
#pragma once

#include <cstdint>
#include <vector>

#include "common/indexing.h"

namespace afnet_kernels {
namespace cpu {

// CSR of a validated index: the entries naming slot s are
// order[start[s] .. start[s + 1]), ascending. Repeats are allowed; padding
// entries (-1) name no slot.
struct SlotReaders {
  std::vector<int64_t> start;
  std::vector<int64_t> order;

  SlotReaders(const int64_t* idx, int64_t count, int64_t slots) : start(slots + 1, 0) {
    for (int64_t k = 0; k < count; ++k) {
      if (idx[k] != kPadding) ++start[idx[k] + 1];
    }
    for (int64_t s = 0; s < slots; ++s) start[s + 1] += start[s];
    order.resize(start[slots]);
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t k = 0; k < count; ++k) {
      if (idx[k] != kPadding) order[next[idx[k]]++] = k;
    }
  }
};

}  // namespace cpu
}  // namespace afnet_kernels

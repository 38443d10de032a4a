// Index values on the device: inverse maps and the validate=True checks.
//
// validate=True: the value checks run on the device into a status word, which
// the host reads once (the op's one device->host sync). On a bad value the
// index is copied to the host and handed to common/validate.h, the function
// the CPU kernels call, so both devices raise the same message.
//
// validate=False: nothing is read back. A bad value stops the kernel that
// meets it with a device-side assert (CUDA_KERNEL_ASSERT), as PyTorch's own
// CUDA index ops do; the kernels still never touch memory out of bounds.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "common/validate.h"

namespace afnet_kernels {
namespace cuda {

// inverse [rule.limit + 1] of an int64 contiguous index [K] on the current
// device: inverse[s] = the largest k with index[k] == s, or -1 (padding
// entries name no slot); inverse[rule.limit] = the IndexStatus bits over all
// entries. validate=True reads those bits and raises the host validator's
// message for a value `rule` forbids (out of range; repeated when
// rule.distinct); validate=False reads nothing, and such a value stops the
// kernel with a device-side assert.
at::Tensor checked_inverse(const at::Tensor& index, const IndexRule& rule, bool validate);

// validate=True for ops that need no inverse: flags values outside
// {-1} ∪ [0, rule.limit) on the device, reads the flag, and raises the host
// validator's message if it is set.
void validate_index_cuda(const at::Tensor& index, const IndexRule& rule);

}  // namespace cuda
}  // namespace afnet_kernels

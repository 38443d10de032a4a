// Device side of the index checks (see index_checks.cuh).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "common/indexing.h"
#include "cuda/index_checks.cuh"
#include "cuda/launch.cuh"

namespace afnet_kernels {
namespace cuda {
namespace {

__device__ __forceinline__ void set_status(int64_t* status, int64_t bits) {
  atomicOr(reinterpret_cast<unsigned long long*>(status), static_cast<unsigned long long>(bits));
}

// Every entry through enter_inverse (common/indexing.h, which the CPU's
// host_inverse calls too); the status word sits at inverse[slots].
__global__ void inverse_index_kernel(const int64_t* __restrict__ index, int64_t count,
                                     int64_t slots, int64_t* __restrict__ inverse,
                                     bool repeats_allowed, bool device_assert) {
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t previous;
    const int64_t status = enter_inverse(inverse, slots, k, index[k], &previous);
    if (status == kIndexOk) continue;
    if (device_assert) {
      CUDA_KERNEL_ASSERT_MSG(status != kIndexOutOfRange,
                             "afnet_kernels: index value out of range (validate=False)");
      CUDA_KERNEL_ASSERT_MSG(repeats_allowed || status != kIndexRepeated,
                             "afnet_kernels: repeated index value in a scatter (validate=False)");
    }
    set_status(inverse + slots, status);
  }
}

// inverse[0, slots) = -1 (free), inverse[slots] = 0 (no status bit).
__global__ void init_inverse_kernel(int64_t* __restrict__ inverse, int64_t slots) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s <= slots;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    inverse[s] = s < slots ? -1 : 0;
  }
}

__global__ void index_range_kernel(const int64_t* __restrict__ index, int64_t count,
                                   int64_t limit, int64_t* __restrict__ status) {
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < count;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t value = index[k];
    if (value != kPadding && !in_range(value, limit)) set_status(status, kIndexOutOfRange);
  }
}

at::Tensor inverse_index(const at::Tensor& index, int64_t slots, bool repeats_allowed,
                         bool device_assert) {
  at::Tensor inverse = at::empty({slots + 1}, index.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  init_inverse_kernel<<<flat_blocks(slots + 1), kThreads, 0, stream>>>(inverse.data_ptr<int64_t>(),
                                                                       slots);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t count = index.size(0);
  if (count == 0) return inverse;
  inverse_index_kernel<<<flat_blocks(count), kThreads, 0, stream>>>(
      index.data_ptr<int64_t>(), count, slots, inverse.data_ptr<int64_t>(), repeats_allowed,
      device_assert);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return inverse;
}

void raise_if_flagged(const at::Tensor& status, const at::Tensor& index, const IndexRule& rule) {
  const int64_t bits = status.item<int64_t>();  // the op's one device->host read
  const int64_t fatal = kIndexOutOfRange | (rule.distinct ? kIndexRepeated : 0);
  if ((bits & fatal) == 0) return;
  const at::Tensor host = index.to(at::kCPU).contiguous();
  validate_index(rule, host.const_data_ptr<int64_t>(), host.numel());
  TORCH_INTERNAL_ASSERT(false, rule.op, ": the device flagged index values (status ", bits,
                        ") that the host check accepts");
}

}  // namespace

at::Tensor checked_inverse(const at::Tensor& index, const IndexRule& rule, bool validate) {
  at::Tensor inverse = inverse_index(index, rule.limit, /*repeats_allowed=*/!rule.distinct, !validate);
  if (validate) raise_if_flagged(inverse.select(0, rule.limit), index, rule);
  return inverse;
}

void validate_index_cuda(const at::Tensor& index, const IndexRule& rule) {
  const int64_t count = index.size(0);
  if (count == 0) return;
  at::Tensor status = at::zeros({1}, index.options());
  index_range_kernel<<<flat_blocks(count), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      index.data_ptr<int64_t>(), count, rule.limit, status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  raise_if_flagged(status, index, rule);
}

}  // namespace cuda
}  // namespace afnet_kernels

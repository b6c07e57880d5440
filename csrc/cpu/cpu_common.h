// Small helpers shared by the C++ CPU kernels (csrc/cpu/*.cpp).
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

namespace openrec_cpu {

// fp32 math, or float64 when any of the tensors is float64 (as the PyTorch formulations).
inline at::ScalarType compute_type(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    if (t->scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

inline void check_cpu(std::initializer_list<const at::Tensor*> tensors, const char* op) {
  for (const at::Tensor* t : tensors)
    TORCH_CHECK_VALUE(t->device().is_cpu(), "openrec::", op, ": expected CPU tensors");
}

inline at::Tensor as_compute(const at::Tensor& t, at::ScalarType cd) { return t.to(cd).contiguous(); }

}  // namespace openrec_cpu

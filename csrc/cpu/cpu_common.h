// Small helpers shared by the C++ CPU kernels (csrc/cpu/*.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstring>
#include <initializer_list>

// Always inlined: the helpers handle 64-byte vectors, which an out-of-line copy compiled for the
// baseline target would take by another calling convention than an AVX-512 clone passes them.
#if defined(__GNUC__)
#define OPENREC_INLINE inline __attribute__((always_inline))
#else
#define OPENREC_INLINE inline
#endif
// The row loops are compiled for AVX-512, AVX2 with FMA (Haswell) and the baseline; the loader picks
// the best the CPU has (GCC's function multi-versioning), so the extension still runs on any x86-64.
// A build may define OPENREC_CPU_CLONES itself, e.g. empty to check the baseline code alone.
#ifndef OPENREC_CPU_CLONES
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OPENREC_CPU_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define OPENREC_CPU_CLONES
#endif
#endif


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

// 64 bytes of channels (16 floats, 8 doubles) as one vector: the compiler maps it onto the registers
// the target has (4 SSE, 2 AVX2 or 1 AVX-512), so the channel loop is vectorised explicitly.
template <typename T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(64))); };

template <typename V, typename T>
OPENREC_INLINE void load(V& v, const T* p) { std::memcpy(&v, p, sizeof(V)); }

}  // namespace openrec_cpu

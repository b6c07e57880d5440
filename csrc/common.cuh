// Small device helpers shared by the kernels: dtype conversion and 16-byte vector loads/stores.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "openrec_kernels.h"

namespace openrec {

template <typename T> struct Scalar;
template <> struct Scalar<float> {
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};
template <> struct Scalar<__half> {
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};
template <> struct Scalar<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

template <typename T> __device__ __forceinline__ float to_float(T v) { return Scalar<T>::to_float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v) { return Scalar<T>::from_float(v); }

// Elements of T in one 16-byte vector.
template <typename T> constexpr int kVec16 = 16 / sizeof(T);

// The kVec16<T> elements of a packed 16-byte vector, as floats.
template <typename T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&v)[kVec16<T>]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < kVec16<T>; ++j) v[j] = to_float(e[j]);
}

// Loads VEC elements starting at p: one 16-byte load when VEC elements make 16 bytes (the caller
// guarantees contiguity and alignment), otherwise VEC scalar loads `stride` apart.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, int64_t stride, float (&v)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    unpack<T>(__ldg(reinterpret_cast<const uint4*>(p)), v);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = to_float(p[j * stride]);
  }
}

// Stores VEC contiguous elements (16-byte store when they make 16 bytes).
template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&v)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < VEC; ++j) e[j] = from_float<T>(v[j]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) p[j] = from_float<T>(v[j]);
  }
}

// The finalize pass of the deterministic reductions (bias and weight gradients): the columns of a
// (rows x cols) fp32 matrix of per-block partial rows are summed, a block of kFinalizeCols x
// kFinalizeSlices threads per kFinalizeCols columns. Each thread adds a fixed stride of the rows, then
// one thread per column adds the slices in order in shared memory: no atomics, the same bits every
// run, and ~rows/32 loads a thread instead of one thread walking every partial row.
constexpr int kFinalizeCols = 32, kFinalizeSlices = 32, kFinalizeThreads = kFinalizeCols * kFinalizeSlices;

inline unsigned finalize_blocks(int64_t cols) {
  return static_cast<unsigned>((cols + kFinalizeCols - 1) / kFinalizeCols);
}

// Called by every thread of a finalize block (it synchronises). True in the one thread that holds
// the total of column `col` (col < cols).
__device__ __forceinline__ bool finalize_column(const float* __restrict__ part, int64_t rows, int64_t cols,
                                                int64_t& col, float& total) {
  __shared__ float s_sum[kFinalizeSlices][kFinalizeCols + 1];
  const int tx = threadIdx.x % kFinalizeCols, ty = threadIdx.x / kFinalizeCols;
  col = static_cast<int64_t>(blockIdx.x) * kFinalizeCols + tx;
  total = 0.f;
  if (col < cols)
    for (int64_t r = ty; r < rows; r += kFinalizeSlices) total += part[r * cols + col];
  s_sum[ty][tx] = total;
  __syncthreads();
  if (ty != 0 || col >= cols) return false;
  for (int r = 1; r < kFinalizeSlices; ++r) total += s_sum[r][tx];
  return true;
}

// Calls FN<T> for the element type named by a DType (inside a function returning cudaError_t).
#define OPENREC_DISPATCH(dtype, FN, ...)                          \
  switch (dtype) {                                                \
    case DType::kFloat32: return FN<float>(__VA_ARGS__);          \
    case DType::kFloat16: return FN<__half>(__VA_ARGS__);         \
    case DType::kBFloat16: return FN<__nv_bfloat16>(__VA_ARGS__); \
  }                                                               \
  return cudaErrorInvalidValue;

// Streaming multiprocessors of the current device (132 on an H100 SXM if the query fails), read once.
inline int num_sms() {
  static int sms = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
      return 132;
    return count;
  }();
  return sms;
}

inline int blocks_for(int64_t work, int threads, int max_blocks = 65535 * 16) {
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  return blocks < 1 ? 1 : static_cast<int>(blocks);
}

}  // namespace openrec

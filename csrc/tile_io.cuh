// Block-wide staging of (kRows x kCols) tiles of a row-major tensor through shared memory. When every
// row start is 16-byte aligned the block moves 16-byte vectors (cp.async on sm_80+, so the copy runs
// while the block computes); otherwise it moves elements. Either way each thread then reads its own
// column from shared memory with constant offsets: no per-element global address arithmetic, which
// was most of the instructions of a column-per-thread kernel in 16-bit.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace openrec {

// Copies CH (16, 8 or 4) bytes global -> shared, or writes CH zero bytes when !valid (gmem is then not
// read). 16-byte copies bypass L1 (.cg); smaller ones must go through it (.ca).
template <int CH>
__device__ __forceinline__ void copy_async(void* smem, const void* gmem, bool valid) {
  static_assert(CH == 16 || CH == 8 || CH == 4, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (CH == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0)
                 : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmem), "n"(CH), "r"(valid ? CH : 0)
                 : "memory");
  }
#else
  using V = std::conditional_t<CH == 16, uint4, std::conditional_t<CH == 8, uint2, unsigned>>;
  *reinterpret_cast<V*>(smem) = valid ? *reinterpret_cast<const V*>(gmem) : V{};
#endif
}

__device__ __forceinline__ void copy16_async(void* smem, const void* gmem, bool valid) {
  copy_async<16>(smem, gmem, valid);
}

// Waits for this thread's outstanding copy16_async; a __syncthreads() must follow before other
// threads read the tile.
__device__ __forceinline__ void copy_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

template <typename T, int kRows, int kCols, int kThreads>
struct Tile {
  static constexpr int kVec = 16 / sizeof(T);
  static constexpr int kVecsPerRow = kCols / kVec;
  static constexpr int kVecsPerThread = kRows * kVecsPerRow / kThreads;
  static constexpr int kElemsPerThread = kRows * kCols / kThreads;
  static_assert(kCols % kVec == 0 && (kRows * kVecsPerRow) % kThreads == 0, "tile must split into whole vectors");

  // `vector` is legal when g and `stride` * sizeof(T) are multiples of 16 bytes (and n_cols of kVec).
  static __host__ bool vector_ok(const void* g, int64_t stride) {
    return reinterpret_cast<uintptr_t>(g) % 16 == 0 && (stride * static_cast<int64_t>(sizeof(T))) % 16 == 0;
  }

  // Fills tile[r][c] with g[r * stride + c]; rows >= n_rows and columns >= n_cols read as 0.
  static __device__ __forceinline__ void load(T (*tile)[kCols], const T* __restrict__ g, int stride, int n_rows,
                                              int n_cols, bool vector, int tid) {
    if (vector) {
#pragma unroll
      for (int k = 0; k < kVecsPerThread; ++k) {
        const int v = tid + k * kThreads, r = v / kVecsPerRow, c = (v % kVecsPerRow) * kVec;
        const bool ok = r < n_rows && c < n_cols;
        copy16_async(&tile[r][c], ok ? g + r * stride + c : g, ok);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kElemsPerThread; ++k) {
        const int e = tid + k * kThreads, r = e / kCols, c = e % kCols;
        tile[r][c] = (r < n_rows && c < n_cols) ? g[r * stride + c] : from_float<T>(0.f);
      }
    }
  }

  // Writes the first n_rows x n_cols of the tile to g (rows `stride` elements apart).
  static __device__ __forceinline__ void store(const T (*tile)[kCols], T* __restrict__ g, int stride, int n_rows,
                                               int n_cols, bool vector, int tid) {
    if (vector) {
#pragma unroll
      for (int k = 0; k < kVecsPerThread; ++k) {
        const int v = tid + k * kThreads, r = v / kVecsPerRow, c = (v % kVecsPerRow) * kVec;
        if (r < n_rows && c < n_cols)
          *reinterpret_cast<uint4*>(g + r * stride + c) = *reinterpret_cast<const uint4*>(&tile[r][c]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kElemsPerThread; ++k) {
        const int e = tid + k * kThreads, r = e / kCols, c = e % kCols;
        if (r < n_rows && c < n_cols) g[r * stride + c] = tile[r][c];
      }
    }
  }
};

}  // namespace openrec

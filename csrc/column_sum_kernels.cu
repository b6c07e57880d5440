// Column sums of a contiguous (rows, cols) matrix into fp32: the bias gradient of a linear layer (the
// sum of grad_out over its rows). Specification: openrec/ops/linear.py (column_sum_torch).
//
// Why: PyTorch sums a bias gradient with its generic reduction, 27-31 us a call at 32k rows of 128-512
// bf16 channels on an H100 (2026-12-06 profile), 43 calls in a tiny Mamba train step and 50 in the
// attention twin's: 9-15% of either step, for data that moves in 3-13 us.
//
// Pass 1: a block owns up to 32 column vectors (16 bytes each when the row is 16-byte aligned: 8
// bf16 or 4 fp32 columns; single columns otherwise) and a range of rows; its threads take the rows in
// a fixed stride, so a warp reads a contiguous run of one row. The threads of a column add their
// sums in shared memory in a fixed order and the block writes one partial row. Pass 2 adds the
// partial rows in a fixed pattern (32 slices, then in order). No atomics: deterministic.
#include <algorithm>

#include "common.cuh"

namespace openrec {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxVecs = 32;  // column vectors per block

template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    column_sum_partial_kernel(const T* __restrict__ x, float* __restrict__ part, int64_t rows, int cols,
                              int64_t rows_per_split) {
  __shared__ float s_acc[kThreads][V + (V == 1 ? 0 : 1)];
  const int n_vecs = (cols + V - 1) / V;
  const int block_vecs = min(kMaxVecs, n_vecs - static_cast<int>(blockIdx.x) * kMaxVecs);
  const int lanes = kThreads / block_vecs;  // row lanes: threads per column vector
  const int t = threadIdx.x, vec = t % block_vecs, lane = t / block_vecs;
  const int col = (static_cast<int>(blockIdx.x) * kMaxVecs + vec) * V;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t r1 = min(rows, r0 + rows_per_split);
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  if (lane < lanes) {
    for (int64_t r = r0 + lane; r < r1; r += lanes) {
      float v[V];
      load_vec<T, V>(x + r * cols + col, 1, v);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] += v[j];
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) s_acc[t][j] = acc[j];
  __syncthreads();
  if (lane != 0) return;
  for (int l = 1; l < lanes; ++l) {
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += s_acc[l * block_vecs + vec][j];
  }
  float* out = part + static_cast<int64_t>(blockIdx.y) * cols + col;
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = acc[j];
}

__global__ void __launch_bounds__(kFinalizeThreads)
    column_sum_finalize_kernel(const float* __restrict__ part, float* __restrict__ out, int n_splits, int cols) {
  int64_t c;
  float total;
  if (finalize_column(part, n_splits, cols, c, total)) out[c] = total;
}

template <typename T>
int vector_width(const void* x, int cols) {
  return cols % kVec16<T> == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 ? kVec16<T> : 1;
}

// Row splits: about 4 blocks per SM in all, each over at least 64 rows.
int64_t row_splits(int64_t rows, int col_blocks) {
  const int64_t want = (4 * static_cast<int64_t>(num_sms()) + col_blocks - 1) / col_blocks;
  const int64_t most = (rows + 63) / 64;
  return std::max<int64_t>(1, std::min(want, most));
}

template <typename T>
cudaError_t column_sum_impl(const void* x, float* out, float* workspace, int64_t rows, int cols,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaErrorInvalidValue;
  const int v = vector_width<T>(x, cols);
  const int n_vecs = (cols + v - 1) / v;
  const int col_blocks = (n_vecs + kMaxVecs - 1) / kMaxVecs;
  const int64_t splits = row_splits(rows, col_blocks);
  const int64_t per_split = (rows + splits - 1) / splits;
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits));
  const T* xp = static_cast<const T*>(x);
  if (v == 1)
    column_sum_partial_kernel<T, 1><<<grid, kThreads, 0, stream>>>(xp, workspace, rows, cols, per_split);
  else
    column_sum_partial_kernel<T, kVec16<T>><<<grid, kThreads, 0, stream>>>(xp, workspace, rows, cols, per_split);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  column_sum_finalize_kernel<<<finalize_blocks(cols), kFinalizeThreads, 0, stream>>>(workspace, out,
                                                                                  static_cast<int>(splits), cols);
  return cudaGetLastError();
}

}  // namespace

int64_t column_sum_workspace_floats(int64_t rows, int cols, DType dtype) {
  // The widest split count any alignment can choose (the scalar path has the most column blocks, so
  // the fewest splits; the vector path the most): bound it by the vector path's.
  const int v = dtype == DType::kFloat32 ? 4 : 8;
  const int col_blocks = ((cols + v - 1) / v + kMaxVecs - 1) / kMaxVecs;
  return row_splits(rows, col_blocks) * static_cast<int64_t>(cols);
}

cudaError_t column_sum(DType dtype, const void* x, float* out, float* workspace, int64_t rows, int cols,
                       cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, column_sum_impl, x, out, workspace, rows, cols, stream)
}

}  // namespace openrec

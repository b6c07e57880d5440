// LayerNorm over the last dim of contiguous rows (rows, cols), cols <= kLayerNormMaxCols, forward and
// backward. Specification: openrec/ops/layer_norm.py.
//
// Why: the rows of our models are short (64-384 channels) and many (B*H*W, 16k-130k per call).
// PyTorch's CUDA LayerNorm gives each row a block in the forward, and its weight/bias gradient
// (GammaBetaBackward) took 79 us per call at 32k rows of 128 bf16 channels on an H200: 15% of the
// GPU time of a tiny model's bf16 train step, for either encoder family (perf note 33).
//
// Here one warp owns a row: lane l holds columns l, l + 32, ... (a warp's load at one k is a
// contiguous run of the row), the row's sums are warp shuffles, and nothing touches shared memory
// in the forward. The backward also accumulates dgamma = sum(dy * xhat) and dbeta = sum(dy) per
// lane over the rows its warp visits, adds the block's warps in shared memory, and writes one
// partial row per block; a finalize kernel adds the blocks in a fixed order. No atomics: the result
// does not depend on scheduling. All math is fp32.
#include "common.cuh"

namespace openrec {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerWarp = 8;      // backward: rows each warp visits (more rows, fewer partials)
constexpr int kMaxBackwardBlocks = 1024;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// K columns per lane: column j = lane + 32 k, real when j < cols.
template <typename T, typename W, int K>
__global__ void __launch_bounds__(kThreads)
    layer_norm_forward_kernel(const T* __restrict__ x, const W* __restrict__ weight, const W* __restrict__ bias,
                              T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                              int cols, float eps) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float w[K], b[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = lane + 32 * k;
    w[k] = j < cols ? to_float(weight[j]) : 0.f;
    b[k] = j < cols ? to_float(bias[j]) : 0.f;
  }
  const float inv_cols = 1.f / static_cast<float>(cols);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* xr = x + r * cols;
    float v[K], sum = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = lane + 32 * k;
      v[k] = j < cols ? to_float(xr[j]) : 0.f;
      sum += v[k];
    }
    const float mu = warp_sum(sum) * inv_cols;
    float sq = 0.f;  // two passes over registers: no cancellation in E[x^2] - E[x]^2
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float d = v[k] - mu;
      if (lane + 32 * k < cols) sq = fmaf(d, d, sq);
    }
    const float rs = rsqrtf(warp_sum(sq) * inv_cols + eps);
    T* yr = y + r * cols;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = lane + 32 * k;
      if (j < cols) yr[j] = from_float<T>(fmaf((v[k] - mu) * rs, w[k], b[k]));
    }
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

// dx = rstd * (dy w - mean(dy w) - xhat mean(dy w xhat)); per-block partial sums of dy xhat and dy
// go to part[block][0 / 1][cols].
template <typename T, typename W, int K>
__global__ void __launch_bounds__(kThreads)
    layer_norm_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ x, const float* __restrict__ mean,
                               const float* __restrict__ rstd, const W* __restrict__ weight, T* __restrict__ grad_x,
                               float* __restrict__ part, int64_t rows, int cols) {
  __shared__ float s_sum[kWarps][2][32 * K];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float w[K], acc_w[K], acc_b[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = lane + 32 * k;
    w[k] = j < cols ? to_float(weight[j]) : 0.f;
    acc_w[k] = 0.f;
    acc_b[k] = 0.f;
  }
  const float inv_cols = 1.f / static_cast<float>(cols);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* xr = x + r * cols;
    const T* gr = grad_y + r * cols;
    const float mu = mean[r], rs = rstd[r];
    float xhat[K], gw[K], sum_gw = 0.f, sum_gw_xhat = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = lane + 32 * k;
      float g = 0.f;
      xhat[k] = 0.f;
      if (j < cols) {
        g = to_float(gr[j]);
        xhat[k] = (to_float(xr[j]) - mu) * rs;
      }
      gw[k] = g * w[k];
      sum_gw += gw[k];
      sum_gw_xhat = fmaf(gw[k], xhat[k], sum_gw_xhat);
      acc_w[k] = fmaf(g, xhat[k], acc_w[k]);
      acc_b[k] += g;
    }
    const float c1 = warp_sum(sum_gw) * inv_cols, c2 = warp_sum(sum_gw_xhat) * inv_cols;
    T* dxr = grad_x + r * cols;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = lane + 32 * k;
      if (j < cols) dxr[j] = from_float<T>(rs * (gw[k] - fmaf(xhat[k], c2, c1)));
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    s_sum[warp][0][lane + 32 * k] = acc_w[k];
    s_sum[warp][1][lane + 32 * k] = acc_b[k];
  }
  __syncthreads();
  float* out = part + static_cast<int64_t>(blockIdx.x) * 2 * cols;
  for (int i = threadIdx.x; i < 2 * cols; i += kThreads) {
    const int which = i / cols, j = i % cols;
    float total = 0.f;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) total += s_sum[v][which][j];
    out[i] = total;
  }
}

// grad_weight / grad_bias: each of the 2 * cols outputs is the sum of its column over the blocks'
// partial rows (finalize_column: 32 threads a column, 8.7 us a call at 512 blocks on an H100 with
// one thread walking them, 35 calls a tiny Mamba train step).
template <typename W>
__global__ void __launch_bounds__(kFinalizeThreads)
    layer_norm_finalize_kernel(const float* __restrict__ part, W* __restrict__ grad_weight,
                               W* __restrict__ grad_bias, int n_blocks, int cols) {
  int64_t i;
  float total;
  if (!finalize_column(part, n_blocks, 2 * static_cast<int64_t>(cols), i, total)) return;
  (i < cols ? grad_weight[i] : grad_bias[i - cols]) = from_float<W>(total);
}

int columns_per_lane(int cols) {  // the smallest K of the instantiated kernels with 32 K >= cols
  const int k = (cols + 31) / 32;
  return k <= 1 ? 1 : k <= 2 ? 2 : k <= 4 ? 4 : k <= 8 ? 8 : 16;
}

int backward_blocks(int64_t rows) {
  const int64_t blocks = (rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp);
  return static_cast<int>(blocks < 1 ? 1 : blocks > kMaxBackwardBlocks ? kMaxBackwardBlocks : blocks);
}

#define OPENREC_LN_BY_K(K_VALUE, LAUNCH) \
  switch (K_VALUE) {                     \
    case 1: LAUNCH(1); break;            \
    case 2: LAUNCH(2); break;            \
    case 4: LAUNCH(4); break;            \
    case 8: LAUNCH(8); break;            \
    default: LAUNCH(16); break;          \
  }

template <typename T, typename W>
cudaError_t forward_typed(const void* x, const void* weight, const void* bias, void* y, float* mean, float* rstd,
                          int64_t rows, int cols, float eps, cudaStream_t stream) {
  const int blocks = blocks_for(rows, kWarps, 65535 * 16);
#define OPENREC_LN_FWD(K)                                                                                         \
  layer_norm_forward_kernel<T, W, K><<<blocks, kThreads, 0, stream>>>(                                            \
      static_cast<const T*>(x), static_cast<const W*>(weight), static_cast<const W*>(bias), static_cast<T*>(y), mean, \
      rstd, rows, cols, eps)
  OPENREC_LN_BY_K(columns_per_lane(cols), OPENREC_LN_FWD)
#undef OPENREC_LN_FWD
  return cudaGetLastError();
}

template <typename T, typename W>
cudaError_t backward_typed(const void* grad_y, const void* x, const float* mean, const float* rstd, const void* weight,
                           void* grad_x, void* grad_weight, void* grad_bias, float* workspace, int64_t rows, int cols,
                           cudaStream_t stream) {
  const int blocks = backward_blocks(rows);
#define OPENREC_LN_BWD(K)                                                                                 \
  layer_norm_backward_kernel<T, W, K><<<blocks, kThreads, 0, stream>>>(                                   \
      static_cast<const T*>(grad_y), static_cast<const T*>(x), mean, rstd, static_cast<const W*>(weight), \
      static_cast<T*>(grad_x), workspace, rows, cols)
  OPENREC_LN_BY_K(columns_per_lane(cols), OPENREC_LN_BWD)
#undef OPENREC_LN_BWD
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  layer_norm_finalize_kernel<W><<<finalize_blocks(2 * static_cast<int64_t>(cols)), kFinalizeThreads, 0, stream>>>(
      workspace, static_cast<W*>(grad_weight), static_cast<W*>(grad_bias), blocks, cols);
  return cudaGetLastError();
}

bool shape_ok(int64_t rows, int cols) { return rows > 0 && cols > 0 && cols <= kLayerNormMaxCols; }

template <typename T>
cudaError_t forward_impl(bool weight_float, const void* x, const void* weight, const void* bias, void* y, float* mean,
                         float* rstd, int64_t rows, int cols, float eps, cudaStream_t stream) {
  if (!shape_ok(rows, cols)) return cudaErrorInvalidValue;
  return weight_float ? forward_typed<T, float>(x, weight, bias, y, mean, rstd, rows, cols, eps, stream)
                      : forward_typed<T, T>(x, weight, bias, y, mean, rstd, rows, cols, eps, stream);
}

template <typename T>
cudaError_t backward_impl(bool weight_float, const void* grad_y, const void* x, const float* mean, const float* rstd,
                          const void* weight, void* grad_x, void* grad_weight, void* grad_bias, float* workspace,
                          int64_t rows, int cols, cudaStream_t stream) {
  if (!shape_ok(rows, cols)) return cudaErrorInvalidValue;
  return weight_float ? backward_typed<T, float>(grad_y, x, mean, rstd, weight, grad_x, grad_weight, grad_bias,
                                                 workspace, rows, cols, stream)
                      : backward_typed<T, T>(grad_y, x, mean, rstd, weight, grad_x, grad_weight, grad_bias, workspace,
                                             rows, cols, stream);
}

}  // namespace

int64_t layer_norm_backward_workspace_floats(int64_t rows, int cols) {
  return static_cast<int64_t>(backward_blocks(rows)) * 2 * cols;
}

cudaError_t layer_norm_forward(DType dtype, bool weight_float, const void* x, const void* weight, const void* bias,
                               void* y, float* mean, float* rstd, int64_t rows, int cols, float eps,
                               cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, forward_impl, weight_float, x, weight, bias, y, mean, rstd, rows, cols, eps, stream)
}

cudaError_t layer_norm_backward(DType dtype, bool weight_float, const void* grad_y, const void* x, const float* mean,
                                const float* rstd, const void* weight, void* grad_x, void* grad_weight,
                                void* grad_bias, float* workspace, int64_t rows, int cols, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, backward_impl, weight_float, grad_y, x, mean, rstd, weight, grad_x, grad_weight, grad_bias,
                   workspace, rows, cols, stream)
}

}  // namespace openrec

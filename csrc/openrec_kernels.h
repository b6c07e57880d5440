// Launchers of the openrec CUDA kernels. This header is torch-free (CUDA runtime types only), so the
// kernel files compile with plain nvcc, which is how CI checks them on a machine without a CUDA torch.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace openrec {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Time steps per saved scan state: the forward stores h_{8k-1} for every chunk k so that the
// backward can recompute any chunk without rescanning from t = 0. Must equal SCAN_CHUNK in Python.
constexpr int kScanChunk = 8;

// ---- DAS (DCNv3 with kernel 1): x is (N, H, W, G*Cg) with the strides given (elements);
// offset is contiguous (N, H, W, G, 2) with the width offset first, fp32 when `offset_float`, else
// in x's dtype (the autocast case); out is contiguous.
struct DasShape {
  int64_t n, h, w, groups, group_channels;
  int64_t stride_n, stride_h, stride_w, stride_c;  // of x
};

cudaError_t das_forward(DType dtype, bool offset_float, const void* x, const void* offset, void* out,
                        const DasShape& s, cudaStream_t stream);

// Whether das_backward_offset can scatter grad_x straight into x's 16-bit dtype (packed atomics,
// no fp32 buffer) for these tensors on a device of compute capability `device_major`.x.
bool das_backward_accum_in_dtype(DType dtype, const void* x, const void* grad_out, const DasShape& s,
                                 int device_major);

// grad_out must be contiguous (N, H, W, C) in `dtype`. Writes grad_offset (like offset). When
// grad_x_accum is not null, also scatters grad_x into it with atomics (zero-filled by the caller;
// fp32 when `accum_float`, else `dtype`, which needs das_backward_accum_in_dtype): fast, but the
// summation order varies from run to run.
cudaError_t das_backward_offset(DType dtype, bool offset_float, const void* grad_out, const void* x,
                                const void* offset, void* grad_offset, void* grad_x_accum, bool accum_float,
                                const DasShape& s, cudaStream_t stream);

// Deterministic grad_x without atomics: one thread owns one channel of one image and accumulates
// every sample's contribution in a fixed order in a shared-memory column. Writes grad_x (contiguous,
// `dtype`) completely. `smem_limit` is the largest dynamic shared memory a block may request.
cudaError_t das_backward_x_owned(DType dtype, bool offset_float, const void* grad_out, const void* offset,
                                 void* grad_x, const DasShape& s, int smem_limit, cudaStream_t stream);

// ---- Selective scan, d_state = 1, channels-last: u, delta, y are contiguous (batch, L, D) in `dtype`;
// A, Dskip, bias are fp32 (D); Bm, Cm (batch, L) with the strides given (the same for both, e.g.
// column slices of the x_proj output), fp32 when `bc_float`, else in `dtype`; states fp32
// (batch, ceil(L / kScanChunk), D).
struct ScanShape {
  int64_t batch, length, dim;
  bool softplus;
  int64_t bc_stride_batch, bc_stride_time;  // of Bm and Cm, in elements
};

cudaError_t scan_forward(DType dtype, bool bc_float, const void* u, const void* delta, const float* A, const void* Bm,
                         const void* Cm, const float* Dskip, const float* bias, void* y, float* states,
                         const ScanShape& s, cudaStream_t stream);

// fp32 scratch the backward needs for its partial sums (the caller allocates it; no zero-fill).
int64_t scan_backward_workspace_floats(const ScanShape& s);

// Writes du, ddelta (dtype, channels-last), dB, dC (contiguous, Bm's type) and fp32 dA, dD, dbias (D). Every
// sum is taken in a fixed order (per-block partials, then a finalize kernel): deterministic.
cudaError_t scan_backward(DType dtype, bool bc_float, const void* grad_y, const void* u, const void* delta,
                          const float* A, const void* Bm, const void* Cm, const float* Dskip, const float* bias,
                          const float* states, void* du, void* ddelta, void* dB, void* dC, float* dA, float* dD,
                          float* dbias, float* workspace, const ScanShape& s, cudaStream_t stream);

constexpr int kScanChannelsPerBlock = 32;

// ---- LayerNorm over the last dim of contiguous (rows, cols) rows, 0 < cols <= kLayerNormMaxCols:
// x, y, grad_y, grad_x in `dtype`; weight, bias, grad_weight, grad_bias fp32 when `weight_float`,
// else `dtype`; mean and rstd fp32 (rows). The backward's sums over rows are per-block partials in
// `workspace` (no zero-fill needed) added in a fixed order: deterministic.
constexpr int kLayerNormMaxCols = 512;

cudaError_t layer_norm_forward(DType dtype, bool weight_float, const void* x, const void* weight, const void* bias,
                               void* y, float* mean, float* rstd, int64_t rows, int cols, float eps,
                               cudaStream_t stream);

int64_t layer_norm_backward_workspace_floats(int64_t rows, int cols);

cudaError_t layer_norm_backward(DType dtype, bool weight_float, const void* grad_y, const void* x, const float* mean,
                                const float* rstd, const void* weight, void* grad_x, void* grad_weight,
                                void* grad_bias, float* workspace, int64_t rows, int cols, cudaStream_t stream);

// ---- Column sums of a contiguous (rows, cols) matrix in `dtype` into fp32 out (cols): a linear layer's
// bias gradient. Per-block partial rows in `workspace` (no zero-fill needed), added in a fixed order:
// deterministic.
int64_t column_sum_workspace_floats(int64_t rows, int cols, DType dtype);

cudaError_t column_sum(DType dtype, const void* x, float* out, float* workspace, int64_t rows, int cols,
                       cudaStream_t stream);

// ---- Depthwise 3x3 convolution, stride 1, zero padding 1, on contiguous channels-last maps
// (n, h, w, c), c % 4 == 0, with the bias and an epilogue fused: mode 0 y = conv(x) + b, 1 y = x +
// conv(x) + b, 2 y = silu(conv(x) + b). weight (c, 9) and bias (c) fp32 when `weight_float`, else
// `dtype`. The backward writes grad_x (channels-last, `dtype`), grad_weight and grad_bias (weight's
// type); mode 2 needs g_buffer (n*h*w*c elements of `dtype`) for the pre-activation gradient. Its
// sums are per-block partials in `workspace` (no zero-fill needed) added in a fixed order:
// deterministic.
cudaError_t dwconv3x3_forward(DType dtype, bool weight_float, int mode, const void* x, const void* weight,
                              const void* bias, void* y, int64_t n, int h, int w, int c, cudaStream_t stream);

int64_t dwconv3x3_backward_workspace_floats(int64_t n, int h, int w, int c);

cudaError_t dwconv3x3_backward(DType dtype, bool weight_float, int mode, const void* grad_y, const void* x,
                               const void* weight, const void* bias, void* grad_x, void* grad_weight, void* grad_bias,
                               void* g_buffer, float* workspace, int64_t n, int h, int w, int c, cudaStream_t stream);

}  // namespace openrec

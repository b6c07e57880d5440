// Launchers of the openrec CUDA kernels. This header is torch-free (CUDA runtime types only), so the
// kernel files compile with plain nvcc, which is how CI checks them on a machine without a CUDA torch.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace openrec {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Time steps per saved scan state: the forward stores h_{16k-1} for every chunk k so that the
// backward can recompute any chunk without rescanning from t = 0. Must equal SCAN_CHUNK in Python.
constexpr int kScanChunk = 16;

// ---- DAS (DCNv3 with kernel 1): x is (N, H, W, G*Cg) with the strides given (elements);
// offset is fp32 contiguous (N, H, W, G, 2) with the width offset first; out is contiguous.
struct DasShape {
  int64_t n, h, w, groups, group_channels;
  int64_t stride_n, stride_h, stride_w, stride_c;  // of x
};

cudaError_t das_forward(DType dtype, const void* x, const float* offset, void* out, const DasShape& s,
                        cudaStream_t stream);

// grad_out must be contiguous (N, H, W, C) in `dtype`. Writes grad_offset (fp32, like offset).
// When grad_x_accum is not null, also scatters grad_x into it (fp32, contiguous, zero-filled by the
// caller) with atomics: fast, but the summation order varies from run to run.
cudaError_t das_backward_offset(DType dtype, const void* grad_out, const void* x, const float* offset,
                                float* grad_offset, float* grad_x_accum, const DasShape& s, cudaStream_t stream);

// Deterministic grad_x without atomics: one thread owns one channel of one image and accumulates
// every sample's contribution in a fixed order in a shared-memory column. Writes grad_x (contiguous,
// `dtype`) completely. `smem_limit` is the largest dynamic shared memory a block may request.
cudaError_t das_backward_x_owned(DType dtype, const void* grad_out, const float* offset, void* grad_x,
                                 const DasShape& s, int smem_limit, cudaStream_t stream);

// ---- Selective scan, d_state = 1, channels-last: u, delta, y are contiguous (batch, L, D) in `dtype`;
// A, Dskip, bias are fp32 (D); Bm, Cm fp32 contiguous (batch, L); states fp32 (batch, ceil(L/16), D).
struct ScanShape {
  int64_t batch, length, dim;
  bool softplus;
};

cudaError_t scan_forward(DType dtype, const void* u, const void* delta, const float* A, const float* Bm,
                         const float* Cm, const float* Dskip, const float* bias, void* y, float* states,
                         const ScanShape& s, cudaStream_t stream);

// Writes du, ddelta (dtype, channels-last) and fp32 partial sums with a fixed reduction order:
// dB_part, dC_part (batch, ceil(D/32), L) and dA_part, dD_part, dbias_part (batch, D); the caller
// sums the partials over dim 1 / dim 0 (deterministic).
cudaError_t scan_backward(DType dtype, const void* grad_y, const void* u, const void* delta, const float* A,
                          const float* Bm, const float* Cm, const float* Dskip, const float* bias,
                          const float* states, void* du, void* ddelta, float* dB_part, float* dC_part,
                          float* dA_part, float* dD_part, float* dbias_part, const ScanShape& s,
                          cudaStream_t stream);

constexpr int kScanChannelsPerBlock = 32;

}  // namespace openrec

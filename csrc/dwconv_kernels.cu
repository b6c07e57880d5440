// Depthwise 3x3 convolution (stride 1, zero padding 1) on channels-last maps, with its bias and the
// DA-Mamba block's epilogues fused, forward and backward. Specification: openrec/ops/dwconv.py.
//
// Why: every DA-Mamba block has four of these (the ResDWC position encoding, DASSM's conv + SiLU,
// the DAS offset branch, the ConvFFN's ResDWC). With cuDNN on channels-last maps each one is a
// convolution, a separate broadcast kernel for the bias, and a separate add or SiLU; in training a
// data-gradient and a weight-gradient convolution and a slow column sum for the bias gradient. On
// an H200 the bias adds alone cost as much as the convolutions (10-44 us each at B128; perf note 34).
//
// Layout: x (N, H, W, C) contiguous, C % 4 == 0; a thread owns 4 channels (one 8- or 16-byte
// vector) of kSeg consecutive output columns of one row and slides a 3x3 window along them, so each
// input vector is loaded once per output row it touches. A block is CVB channel vectors x R rows of
// such segments; its weights are staged in shared memory as [tap][channel] so a thread reads its
// four channels of a tap as one float4.
//
// Backward: pass 1 (wgrad) walks the same windows over x with grad_y at the centre, forms the
// pre-bias gradient g (grad_y, or grad_y * silu'(z) with z recomputed from x), writes g when the
// epilogue is SiLU, and accumulates sum g * x_tap and sum g per thread; the block adds its rows in
// shared memory and writes one partial per block, and a finalize kernel adds the blocks in a fixed
// order (no atomics: deterministic). Pass 2 is the forward kernel on g with the taps flipped (the
// transposed convolution), plus grad_y itself for the residual epilogue.
#include "common.cuh"

namespace openrec {
namespace {

constexpr int kThreads = 256;
constexpr int kSeg = 8;   // output columns per thread
constexpr int kV = 4;     // channels per thread
constexpr int kMaxCVB = 64;  // channel vectors per block (256 channels)
constexpr int kGroups = 10;  // per channel: 9 weight taps + the bias

template <typename T> struct Raw4;
template <> struct Raw4<float> { using type = float4; };
template <> struct Raw4<__half> { using type = uint2; };
template <> struct Raw4<__nv_bfloat16> { using type = uint2; };

template <typename T>
__device__ __forceinline__ void load4(const T* __restrict__ p, float (&v)[kV]) {
  using R = typename Raw4<T>::type;
  const R raw = __ldg(reinterpret_cast<const R*>(p));
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < kV; ++j) v[j] = to_float(e[j]);
}

template <typename T>
__device__ __forceinline__ void store4(T* __restrict__ p, const float (&v)[kV]) {
  using R = typename Raw4<T>::type;
  R raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int j = 0; j < kV; ++j) e[j] = from_float<T>(v[j]);
  *reinterpret_cast<R*>(p) = raw;
}

// Rows h-1, h, h+1 of column w (zeros outside the map). `img` points at channel c0 of pixel (n, 0, 0).
template <typename T>
__device__ __forceinline__ void load_column(const T* __restrict__ img, int h, int w, int H, int W, int64_t C,
                                            float (&col)[3][kV]) {
#pragma unroll
  for (int r = 0; r < 3; ++r) {
    const int hh = h - 1 + r;
    if (hh >= 0 && hh < H && w >= 0 && w < W) {
      load4(img + (static_cast<int64_t>(hh) * W + w) * C, col[r]);
    } else {
#pragma unroll
      for (int j = 0; j < kV; ++j) col[r][j] = 0.f;
    }
  }
}

__device__ __forceinline__ float sigmoid_fast(float z) { return 1.f / (1.f + __expf(-z)); }

struct Tiling {
  int cv, cvb, rows;  // channel vectors, vectors per block, segment rows per block
  int nseg;           // segments per image row
  int64_t items;      // (n, h, segment) triples
};

Tiling tiling(int64_t n, int h, int w, int c) {
  Tiling t;
  t.cv = c / kV;
  t.cvb = 1;
  while (t.cvb < t.cv && t.cvb < kMaxCVB) t.cvb *= 2;
  t.rows = kThreads / t.cvb;
  t.nseg = (w + kSeg - 1) / kSeg;
  t.items = n * h * t.nseg;
  return t;
}

// Stages the block's weights as s_w[tap][channel] (FLIP: tap 8 - t) and its bias.
template <typename W, bool FLIP>
__device__ __forceinline__ void stage_weights(const W* __restrict__ weight, const W* __restrict__ bias, int c_lo,
                                              int n_ch, float* s_w, float* s_b) {
  for (int i = threadIdx.x; i < n_ch * 9; i += kThreads) {
    const int c = i / 9, t = i % 9;
    s_w[(FLIP ? 8 - t : t) * (kMaxCVB * kV) + c] = to_float(weight[static_cast<int64_t>(c_lo + c) * 9 + t]);
  }
  for (int i = threadIdx.x; i < n_ch; i += kThreads) s_b[i] = bias != nullptr ? to_float(bias[c_lo + i]) : 0.f;
}

// The block's staged weights and bias of this thread's four channels, into registers.
__device__ __forceinline__ void load_weights(const float* s_w, const float* s_b, int tx, float (&wt)[9][kV],
                                             float (&b)[kV]) {
#pragma unroll
  for (int t = 0; t < 9; ++t) {
    const float4 q = *reinterpret_cast<const float4*>(s_w + t * (kMaxCVB * kV) + tx * kV);
    wt[t][0] = q.x; wt[t][1] = q.y; wt[t][2] = q.z; wt[t][3] = q.w;
  }
#pragma unroll
  for (int j = 0; j < kV; ++j) b[j] = s_b[tx * kV + j];
}

// bias + the 3x3 window (columns left, mid, right) of channel j, taps in a fixed order.
__device__ __forceinline__ float window_sum(const float (&wt)[9][kV], const float (&left)[3][kV],
                                            const float (&mid)[3][kV], const float (&right)[3][kV], int j,
                                            float acc) {
#pragma unroll
  for (int r = 0; r < 3; ++r) {
    acc = fmaf(wt[3 * r][j], left[r][j], acc);
    acc = fmaf(wt[3 * r + 1][j], mid[r][j], acc);
    acc = fmaf(wt[3 * r + 2][j], right[r][j], acc);
  }
  return acc;
}

// Moves the window one column to the right (right is loaded next).
__device__ __forceinline__ void slide(float (&left)[3][kV], float (&mid)[3][kV], const float (&right)[3][kV]) {
#pragma unroll
  for (int r = 0; r < 3; ++r)
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      left[r][j] = mid[r][j];
      mid[r][j] = right[r][j];
    }
}

// y = epilogue(conv(x) + bias). MODE 0: plain; 1: + x (residual); 2: SiLU. FLIP: the transposed
// convolution (grad x of a plain convolution), bias null.
template <typename T, typename W, int MODE, bool FLIP>
__global__ void __launch_bounds__(kThreads)
    dwconv_kernel(const T* __restrict__ x, const W* __restrict__ weight, const W* __restrict__ bias,
                  T* __restrict__ y, int H, int Wd, int C, Tiling tl) {
  __shared__ __align__(16) float s_w[9 * kMaxCVB * kV];
  __shared__ float s_b[kMaxCVB * kV];
  const int tx = threadIdx.x % tl.cvb, ty = threadIdx.x / tl.cvb;
  const int c_lo = blockIdx.y * tl.cvb * kV;
  const int n_ch = min(tl.cvb * kV, C - c_lo);
  stage_weights<W, FLIP>(weight, bias, c_lo, n_ch, s_w, s_b);
  __syncthreads();
  const int v = blockIdx.y * tl.cvb + tx;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * tl.rows + ty;
  if (v >= tl.cv || item >= tl.items) return;
  const int seg = static_cast<int>(item % tl.nseg);
  const int64_t row = item / tl.nseg;
  const int h = static_cast<int>(row % H);
  const int64_t n = row / H;
  float wt[9][kV], b[kV];
  load_weights(s_w, s_b, tx, wt, b);
  const int64_t C64 = C;
  const T* img = x + n * H * Wd * C64 + static_cast<int64_t>(v) * kV;
  T* out_img = y + n * H * Wd * C64 + static_cast<int64_t>(v) * kV;
  const int w0 = seg * kSeg;
  float left[3][kV], mid[3][kV], right[3][kV];
  load_column(img, h, w0 - 1, H, Wd, C64, left);
  load_column(img, h, w0, H, Wd, C64, mid);
#pragma unroll
  for (int k = 0; k < kSeg; ++k) {
    const int w = w0 + k;
    if (w >= Wd) break;
    load_column(img, h, w + 1, H, Wd, C64, right);
    float out[kV];
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      float acc = window_sum(wt, left, mid, right, j, b[j]);
      if constexpr (MODE == 1) acc += mid[1][j];
      if constexpr (MODE == 2) acc *= sigmoid_fast(acc);
      out[j] = acc;
    }
    store4(out_img + (static_cast<int64_t>(h) * Wd + w) * C64, out);
    slide(left, mid, right);
  }
}

// Pass 1 of the backward: per-block partial sums of g * x_tap (9 taps) and g, part[block.x][group][c],
// group 0-8 a tap, 9 the bias. SILU: g = grad_y * silu'(z), rounded to T and written to g_out.
template <typename T, typename W, bool SILU>
__global__ void __launch_bounds__(kThreads)
    dwconv_wgrad_kernel(const T* __restrict__ grad_y, const T* __restrict__ x, const W* __restrict__ weight,
                        const W* __restrict__ bias, T* __restrict__ g_out, float* __restrict__ part, int H, int Wd,
                        int C, Tiling tl) {
  __shared__ __align__(16) float s_w[SILU ? 9 * kMaxCVB * kV : 4];
  __shared__ float s_b[SILU ? kMaxCVB * kV : 1];
  __shared__ float4 s_red[kThreads];
  const int tx = threadIdx.x % tl.cvb, ty = threadIdx.x / tl.cvb;
  const int c_lo = blockIdx.y * tl.cvb * kV;
  const int n_ch = min(tl.cvb * kV, C - c_lo);
  if constexpr (SILU) {
    stage_weights<W, false>(weight, bias, c_lo, n_ch, s_w, s_b);
    __syncthreads();
  }
  const int v = blockIdx.y * tl.cvb + tx;
  const bool active = v < tl.cv;
  [[maybe_unused]] float wt[SILU ? 9 : 1][kV];
  [[maybe_unused]] float b[kV];
  if constexpr (SILU) load_weights(s_w, s_b, tx, wt, b);
  float gw[9][kV], gb[kV];
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    gb[j] = 0.f;
#pragma unroll
    for (int t = 0; t < 9; ++t) gw[t][j] = 0.f;
  }
  const int64_t C64 = C;
  if (active) {
    for (int64_t item = static_cast<int64_t>(blockIdx.x) * tl.rows + ty; item < tl.items;
         item += static_cast<int64_t>(gridDim.x) * tl.rows) {
      const int seg = static_cast<int>(item % tl.nseg);
      const int64_t row = item / tl.nseg;
      const int h = static_cast<int>(row % H);
      const int64_t n = row / H;
      const int64_t base = n * H * Wd * C64 + static_cast<int64_t>(v) * kV;
      const T* img = x + base;
      const int w0 = seg * kSeg;
      float left[3][kV], mid[3][kV], right[3][kV];
      load_column(img, h, w0 - 1, H, Wd, C64, left);
      load_column(img, h, w0, H, Wd, C64, mid);
#pragma unroll
      for (int k = 0; k < kSeg; ++k) {
        const int w = w0 + k;
        if (w >= Wd) break;
        load_column(img, h, w + 1, H, Wd, C64, right);
        const int64_t pix = base + (static_cast<int64_t>(h) * Wd + w) * C64;
        float g[kV];
        load4(grad_y + pix, g);
        if constexpr (SILU) {
#pragma unroll
          for (int j = 0; j < kV; ++j) {
            const float z = window_sum(wt, left, mid, right, j, b[j]);
            const float s = sigmoid_fast(z);
            g[j] = to_float(from_float<T>(g[j] * s * fmaf(z, 1.f - s, 1.f)));  // rounded as g_out holds it
          }
          store4(g_out + pix, g);
        }
#pragma unroll
        for (int j = 0; j < kV; ++j) {
          gb[j] += g[j];
#pragma unroll
          for (int r = 0; r < 3; ++r) {
            gw[3 * r][j] = fmaf(g[j], left[r][j], gw[3 * r][j]);
            gw[3 * r + 1][j] = fmaf(g[j], mid[r][j], gw[3 * r + 1][j]);
            gw[3 * r + 2][j] = fmaf(g[j], right[r][j], gw[3 * r + 2][j]);
          }
        }
        slide(left, mid, right);
      }
    }
  }
  // Add the block's rows per channel vector, one group at a time, rows in order.
  float* out = part + static_cast<int64_t>(blockIdx.x) * kGroups * C;
#pragma unroll
  for (int grp = 0; grp < kGroups; ++grp) {
    const float* src = grp < 9 ? gw[grp < 9 ? grp : 0] : gb;
    s_red[threadIdx.x] = make_float4(src[0], src[1], src[2], src[3]);
    __syncthreads();
    if (ty == 0 && active) {
      float4 total = s_red[tx];
      for (int r = 1; r < tl.rows; ++r) {
        const float4 q = s_red[r * tl.cvb + tx];
        total.x += q.x; total.y += q.y; total.z += q.z; total.w += q.w;
      }
      *reinterpret_cast<float4*>(out + static_cast<int64_t>(grp) * C + static_cast<int64_t>(v) * kV) = total;
    }
    __syncthreads();
  }
}

constexpr int kFinalizeCols = 32, kFinalizeRows = 32;

// grad_weight (C, 9) and grad_bias (C): each output is the sum over the n_part block partials, split
// over kFinalizeRows threads in a fixed pattern and added in shared memory in a fixed order.
template <typename W>
__global__ void dwconv_finalize_kernel(const float* __restrict__ part, W* __restrict__ grad_weight,
                                       W* __restrict__ grad_bias, int n_part, int C) {
  __shared__ float s_sum[kFinalizeRows][kFinalizeCols + 1];
  const int tx = threadIdx.x % kFinalizeCols, ty = threadIdx.x / kFinalizeCols;
  const int64_t outputs = static_cast<int64_t>(kGroups) * C;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kFinalizeCols + tx;
  float total = 0.f;
  if (o < outputs)
    for (int p = ty; p < n_part; p += kFinalizeRows) total += part[static_cast<int64_t>(p) * outputs + o];
  s_sum[ty][tx] = total;
  __syncthreads();
  if (ty != 0 || o >= outputs) return;
  for (int r = 1; r < kFinalizeRows; ++r) total += s_sum[r][tx];
  const int grp = static_cast<int>(o / C), c = static_cast<int>(o % C);
  if (grp < 9) {
    grad_weight[static_cast<int64_t>(c) * 9 + grp] = from_float<W>(total);
  } else {
    grad_bias[c] = from_float<W>(total);
  }
}

int num_sms() {
  static int sms = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
      return 132;
    return count;
  }();
  return sms;
}

int wgrad_blocks_x(const Tiling& t) {
  const int64_t needed = (t.items + t.rows - 1) / t.rows;
  const int64_t channel_blocks = (t.cv + t.cvb - 1) / t.cvb;
  int64_t target = (4LL * num_sms() + channel_blocks - 1) / channel_blocks;
  if (target < 1) target = 1;
  const int64_t blocks = needed < target ? needed : target;
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

bool shape_ok(int64_t n, int h, int w, int c) { return n > 0 && h > 0 && w > 0 && c > 0 && c % kV == 0; }

template <typename T, typename W>
cudaError_t forward_typed(int mode, const void* x, const void* weight, const void* bias, void* y, int64_t n, int h,
                          int w, int c, cudaStream_t stream) {
  const Tiling tl = tiling(n, h, w, c);
  const dim3 grid(static_cast<unsigned>((tl.items + tl.rows - 1) / tl.rows), (tl.cv + tl.cvb - 1) / tl.cvb);
  const T* xp = static_cast<const T*>(x);
  const W* wp = static_cast<const W*>(weight);
  const W* bp = static_cast<const W*>(bias);
  T* yp = static_cast<T*>(y);
  switch (mode) {
    case 0: dwconv_kernel<T, W, 0, false><<<grid, kThreads, 0, stream>>>(xp, wp, bp, yp, h, w, c, tl); break;
    case 1: dwconv_kernel<T, W, 1, false><<<grid, kThreads, 0, stream>>>(xp, wp, bp, yp, h, w, c, tl); break;
    case 2: dwconv_kernel<T, W, 2, false><<<grid, kThreads, 0, stream>>>(xp, wp, bp, yp, h, w, c, tl); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T, typename W>
cudaError_t backward_typed(int mode, const void* grad_y, const void* x, const void* weight, const void* bias,
                           void* grad_x, void* grad_weight, void* grad_bias, void* g_buffer, float* workspace,
                           int64_t n, int h, int w, int c, cudaStream_t stream) {
  const Tiling tl = tiling(n, h, w, c);
  const unsigned channel_blocks = (tl.cv + tl.cvb - 1) / tl.cvb;
  const int n_part = wgrad_blocks_x(tl);
  const T* gy = static_cast<const T*>(grad_y);
  const T* xp = static_cast<const T*>(x);
  const W* wp = static_cast<const W*>(weight);
  const W* bp = static_cast<const W*>(bias);
  T* g = static_cast<T*>(g_buffer);
  if (mode == 2) {
    dwconv_wgrad_kernel<T, W, true><<<dim3(n_part, channel_blocks), kThreads, 0, stream>>>(gy, xp, wp, bp, g,
                                                                                           workspace, h, w, c, tl);
  } else {
    dwconv_wgrad_kernel<T, W, false><<<dim3(n_part, channel_blocks), kThreads, 0, stream>>>(gy, xp, wp, bp, nullptr,
                                                                                            workspace, h, w, c, tl);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t outputs = static_cast<int64_t>(kGroups) * c;
  dwconv_finalize_kernel<W><<<static_cast<unsigned>((outputs + kFinalizeCols - 1) / kFinalizeCols),
                              kFinalizeCols * kFinalizeRows, 0, stream>>>(
      workspace, static_cast<W*>(grad_weight), static_cast<W*>(grad_bias), n_part, c);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((tl.items + tl.rows - 1) / tl.rows), channel_blocks);
  T* gx = static_cast<T*>(grad_x);
  if (mode == 1) {  // grad x = grad_y + conv^T(grad_y)
    dwconv_kernel<T, W, 1, true><<<grid, kThreads, 0, stream>>>(gy, wp, nullptr, gx, h, w, c, tl);
  } else {
    dwconv_kernel<T, W, 0, true><<<grid, kThreads, 0, stream>>>(mode == 2 ? g : gy, wp, nullptr, gx, h, w, c, tl);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_impl(bool weight_float, int mode, const void* x, const void* weight, const void* bias, void* y,
                         int64_t n, int h, int w, int c, cudaStream_t stream) {
  if (!shape_ok(n, h, w, c)) return cudaErrorInvalidValue;
  return weight_float ? forward_typed<T, float>(mode, x, weight, bias, y, n, h, w, c, stream)
                      : forward_typed<T, T>(mode, x, weight, bias, y, n, h, w, c, stream);
}

template <typename T>
cudaError_t backward_impl(bool weight_float, int mode, const void* grad_y, const void* x, const void* weight,
                          const void* bias, void* grad_x, void* grad_weight, void* grad_bias, void* g_buffer,
                          float* workspace, int64_t n, int h, int w, int c, cudaStream_t stream) {
  if (!shape_ok(n, h, w, c)) return cudaErrorInvalidValue;
  return weight_float ? backward_typed<T, float>(mode, grad_y, x, weight, bias, grad_x, grad_weight, grad_bias,
                                                 g_buffer, workspace, n, h, w, c, stream)
                      : backward_typed<T, T>(mode, grad_y, x, weight, bias, grad_x, grad_weight, grad_bias, g_buffer,
                                             workspace, n, h, w, c, stream);
}

}  // namespace

int64_t dwconv3x3_backward_workspace_floats(int64_t n, int h, int w, int c) {
  if (!shape_ok(n, h, w, c)) return 1;
  return static_cast<int64_t>(wgrad_blocks_x(tiling(n, h, w, c))) * kGroups * c;
}

cudaError_t dwconv3x3_forward(DType dtype, bool weight_float, int mode, const void* x, const void* weight,
                              const void* bias, void* y, int64_t n, int h, int w, int c, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, forward_impl, weight_float, mode, x, weight, bias, y, n, h, w, c, stream)
}

cudaError_t dwconv3x3_backward(DType dtype, bool weight_float, int mode, const void* grad_y, const void* x,
                               const void* weight, const void* bias, void* grad_x, void* grad_weight, void* grad_bias,
                               void* g_buffer, float* workspace, int64_t n, int h, int w, int c, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, backward_impl, weight_float, mode, grad_y, x, weight, bias, grad_x, grad_weight, grad_bias,
                   g_buffer, workspace, n, h, w, c, stream)
}

}  // namespace openrec

// DAS (DCNv3 with kernel 1, mask 1): per channel group, bilinear sampling at (h + dy, w + dx) with
// zeros outside. The arithmetic follows openrec/ops/das.py (the specification): floor, weights
// (hh*hw, hh*lw, lh*hw, lh*lw) for the corners (h0,w0), (h0,w0+1), (h0+1,w0), (h0+1,w0+1), all math in
// fp32. One thread handles one (pixel, group) and loops over the group's channels in 16-byte vectors,
// so the offset and the corner weights are computed once per group.
#include <type_traits>

#include "common.cuh"

namespace openrec {
namespace {

struct Corners {
  int64_t x_off[4];  // element offsets of the corners inside one image of x (strided)
  int64_t pix[4];    // pixel index h*W + w of the corners (for contiguous tensors)
  float weight[4];
  bool valid[4];
  float lh, lw, hh, hw;
  bool finite;
};

__device__ __forceinline__ Corners make_corners(float loc_h, float loc_w, const DasShape& s) {
  Corners c;
  c.finite = isfinite(loc_h) && isfinite(loc_w);
  // Far outside, every corner is invalid whatever the exact location: clamping keeps the integer
  // conversion defined and changes neither the output (0) nor the gradients (0).
  loc_h = fminf(fmaxf(loc_h, -2.f), static_cast<float>(s.h) + 1.f);
  loc_w = fminf(fmaxf(loc_w, -2.f), static_cast<float>(s.w) + 1.f);
  const float h_low_f = floorf(loc_h), w_low_f = floorf(loc_w);
  const int h0 = static_cast<int>(h_low_f), w0 = static_cast<int>(w_low_f);
  c.lh = loc_h - h_low_f;
  c.lw = loc_w - w_low_f;
  c.hh = 1.f - c.lh;
  c.hw = 1.f - c.lw;
  c.weight[0] = c.hh * c.hw;
  c.weight[1] = c.hh * c.lw;
  c.weight[2] = c.lh * c.hw;
  c.weight[3] = c.lh * c.lw;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int hk = h0 + (k >> 1), wk = w0 + (k & 1);
    c.valid[k] = hk >= 0 && hk < s.h && wk >= 0 && wk < s.w;
    c.x_off[k] = c.valid[k] ? hk * s.stride_h + wk * s.stride_w : 0;
    c.pix[k] = c.valid[k] ? static_cast<int64_t>(hk) * s.w + wk : 0;
  }
  return c;
}

// The 4 corner vectors of one sample (zeros for corners outside the image).
template <typename T, int VEC>
__device__ __forceinline__ void load_corners(const T* __restrict__ base, const Corners& cr, int64_t stride_c,
                                             float (&val)[4][VEC]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (cr.valid[k]) {
      load_vec<T, VEC>(base + cr.x_off[k], stride_c, val[k]);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) val[k][j] = 0.f;
    }
  }
}

// The 4 corners' 16-byte vectors, still packed (zeros for corners outside the image).
template <typename T>
__device__ __forceinline__ void load_corners_raw(const T* __restrict__ base, const Corners& cr, uint4 (&raw)[4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k)
    raw[k] = cr.valid[k] ? __ldg(reinterpret_cast<const uint4*>(base + cr.x_off[k])) : make_uint4(0, 0, 0, 0);
}

// Bilinear blend of the corners; NaN for a non-finite offset, as the reference gives.
template <int VEC>
__device__ __forceinline__ void blend_corners(const Corners& cr, const float (&val)[4][VEC], float (&acc)[VEC]) {
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    acc[j] = cr.weight[0] * val[0][j] + cr.weight[1] * val[1][j] + cr.weight[2] * val[2][j] + cr.weight[3] * val[3][j];
    if (!cr.finite) acc[j] = __int_as_float(0x7fc00000);
  }
}

// (d/d dx, d/d dy) of the sample from dot[k] = <grad_out, corner k> over the group's channels.
__device__ __forceinline__ float2 offset_grad(const Corners& cr, const float (&dot)[4]) {
  if (!cr.finite) return make_float2(__int_as_float(0x7fc00000), __int_as_float(0x7fc00000));
  return make_float2(cr.hh * (dot[1] - dot[0]) + cr.lh * (dot[3] - dot[2]),
                     cr.hw * (dot[2] - dot[0]) + cr.lw * (dot[3] - dot[1]));
}

template <int VEC>
__device__ __forceinline__ void atomic_add_scaled(float* dst, const float (&v)[VEC], float weight) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (VEC % 4 == 0) {  // sm_90 vector atomics: one instruction per 4 floats
#pragma unroll
    for (int j = 0; j < VEC; j += 4)
      atomicAdd(reinterpret_cast<float4*>(dst + j),
                make_float4(weight * v[j], weight * v[j + 1], weight * v[j + 2], weight * v[j + 3]));
  } else
#endif
  {
#pragma unroll
    for (int j = 0; j < VEC; ++j) atomicAdd(dst + j, weight * v[j]);
  }
}

// One packed pair added atomically: native f16x2 (sm_60+) / bf16x2 (sm_90) atomics, else a CAS loop.
[[maybe_unused]] __device__ __forceinline__ void atomic_add_pair(uint32_t* addr, uint32_t val, __half) {
  atomicAdd(reinterpret_cast<__half2*>(addr), *reinterpret_cast<const __half2*>(&val));
}
[[maybe_unused]] __device__ __forceinline__ void atomic_add_pair(uint32_t* addr, uint32_t val, __nv_bfloat16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<__nv_bfloat162*>(addr), *reinterpret_cast<const __nv_bfloat162*>(&val));
#else
  const __nv_bfloat162 add = *reinterpret_cast<const __nv_bfloat162*>(&val);
  uint32_t old = *addr, assumed;
  do {
    assumed = old;
    const __nv_bfloat162 cur = *reinterpret_cast<const __nv_bfloat162*>(&assumed);
    const float2 a = __bfloat1622float2(cur), b = __bfloat1622float2(add);
    const __nv_bfloat162 sum = __floats2bfloat162_rn(a.x + b.x, a.y + b.y);
    old = atomicCAS(addr, assumed, *reinterpret_cast<const uint32_t*>(&sum));
  } while (old != assumed);
#endif
}

// Offsets are read in their own dtype (fp32, or x's dtype under autocast: no cast kernel) and their
// gradient is written in it.
template <typename OT>
__device__ __forceinline__ float2 load_offset(const OT* __restrict__ offset, int64_t pg) {
  if constexpr (std::is_same_v<OT, float>) {
    return reinterpret_cast<const float2*>(offset)[pg];
  } else {
    return make_float2(to_float(offset[2 * pg]), to_float(offset[2 * pg + 1]));
  }
}

template <typename OT>
__device__ __forceinline__ void store_offset(OT* __restrict__ offset, int64_t pg, float2 v) {
  if constexpr (std::is_same_v<OT, float>) {
    reinterpret_cast<float2*>(offset)[pg] = v;
  } else {
    offset[2 * pg] = from_float<OT>(v.x);
    offset[2 * pg + 1] = from_float<OT>(v.y);
  }
}

// Two 16-bit values packed in 32 bits (low half first), rounded to nearest.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const T a = from_float<T>(lo), b = from_float<T>(hi);
  return static_cast<uint32_t>(reinterpret_cast<const uint16_t&>(a)) |
         (static_cast<uint32_t>(reinterpret_cast<const uint16_t&>(b)) << 16);
}

// Adds weight * v into 16-bit dst (VEC even, dst 4-byte aligned) with packed atomics: one 16-byte
// vector reduction on sm_90, pair atomics elsewhere. Each add rounds to the 16-bit type, so the
// result carries a few roundings instead of one (well inside the bf16/fp16 tolerance), and, like
// the fp32 atomics, its rounding depends on the order of the adds.
template <typename T, int VEC>
__device__ __forceinline__ void atomic_add_scaled_packed(T* dst, const float (&v)[VEC], float weight) {
  static_assert(VEC % 2 == 0, "packed atomics need pairs");
  uint32_t p[VEC / 2];
#pragma unroll
  for (int j = 0; j < VEC / 2; ++j) p[j] = pack2<T>(weight * v[2 * j], weight * v[2 * j + 1]);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (VEC == 8) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      asm volatile("red.global.add.noftz.v4.bf16x2 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(p[0]), "r"(p[1]),
                   "r"(p[2]), "r"(p[3])
                   : "memory");
    else
      asm volatile("red.global.add.noftz.v4.f16x2 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(p[0]), "r"(p[1]),
                   "r"(p[2]), "r"(p[3])
                   : "memory");
  } else
#endif
  {
#pragma unroll
    for (int j = 0; j < VEC / 2; ++j) atomic_add_pair(reinterpret_cast<uint32_t*>(dst) + j, p[j], T{});
  }
}

template <typename T, typename OT, int VEC>
__global__ void __launch_bounds__(256) das_forward_kernel(const T* __restrict__ x, const OT* __restrict__ offset,
                                                          T* __restrict__ out, DasShape s) {
  const int64_t total = s.n * s.h * s.w * s.groups;
  const int64_t channels = s.groups * s.group_channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = i % s.groups, p = i / s.groups;
    const int64_t w = p % s.w, h = (p / s.w) % s.h, n = p / (s.w * s.h);
    const float2 o = load_offset(offset, i);
    const Corners cr = make_corners(static_cast<float>(h) + o.y, static_cast<float>(w) + o.x, s);
    const T* xb = x + n * s.stride_n + g * s.group_channels * s.stride_c;
    T* ob = out + p * channels + g * s.group_channels;
    for (int64_t c = 0; c < s.group_channels; c += VEC) {
      float v[4][VEC], acc[VEC];
      load_corners<T, VEC>(xb + c * s.stride_c, cr, s.stride_c, v);
      blend_corners<VEC>(cr, v, acc);
      store_vec<T, VEC>(ob + c, acc);
    }
  }
}

template <typename T, typename OT, int VEC>
__global__ void __launch_bounds__(256) das_backward_offset_kernel(const T* __restrict__ grad_out, const T* __restrict__ x,
                                                                  const OT* __restrict__ offset,
                                                                  OT* __restrict__ grad_offset,
                                                                  float* __restrict__ grad_x_accum, DasShape s) {
  const int64_t total = s.n * s.h * s.w * s.groups;
  const int64_t channels = s.groups * s.group_channels;
  const int64_t pixels = s.h * s.w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = i % s.groups, p = i / s.groups;
    const int64_t w = p % s.w, h = (p / s.w) % s.h, n = p / pixels;
    const float2 o = load_offset(offset, i);
    const Corners cr = make_corners(static_cast<float>(h) + o.y, static_cast<float>(w) + o.x, s);
    const T* xb = x + n * s.stride_n + g * s.group_channels * s.stride_c;
    const T* gb = grad_out + p * channels + g * s.group_channels;
    float dot[4] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t c = 0; c < s.group_channels; c += VEC) {
      float go[VEC];
      load_vec<T, VEC>(gb + c, 1, go);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (!cr.valid[k]) continue;
        float v[VEC];
        load_vec<T, VEC>(xb + cr.x_off[k] + c * s.stride_c, s.stride_c, v);
#pragma unroll
        for (int j = 0; j < VEC; ++j) dot[k] += go[j] * v[j];
        if (grad_x_accum != nullptr)
          atomic_add_scaled<VEC>(grad_x_accum + (n * pixels + cr.pix[k]) * channels + g * s.group_channels + c, go,
                                 cr.weight[k]);
      }
    }
    store_offset(grad_offset, i, offset_grad(cr, dot));
  }
}

// Fast path (channels contiguous, group_channels a multiple of the vector width): one thread per
// 16-byte vector of one (pixel, group), so a warp's loads and stores cover contiguous 512-byte rows.
// Every thread of a group recomputes the corner weights (cheap) instead of sharing them. The corner
// vectors stay packed until the blend: in 16-bit that halves their registers (more warps resident;
// bf16 forward 0.0181 -> 0.0171 ms at B256 C256 4x32 on an H100, perf note 18).
// Index is uint32_t when every index fits (the usual case: 64-bit division is several times slower).
template <typename T, typename OT, typename Index>
__global__ void __launch_bounds__(256) das_forward_vec_kernel(const T* __restrict__ x, const OT* __restrict__ offset,
                                                              T* __restrict__ out, DasShape s, int vecs_per_group) {
  constexpr int VEC = kVec16<T>;
  const Index total = static_cast<Index>(s.n * s.h * s.w * s.groups * vecs_per_group);
  const Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const Index vpg = vecs_per_group, groups = s.groups, width = s.w, height = s.h;
  const Index v = i % vpg, pg = i / vpg;  // pg = (pixel, group) index
  const Index g = pg % groups, p = pg / groups;
  const Index w = p % width, h = (p / width) % height, n = p / (width * height);
  const float2 o = load_offset(offset, pg);
  const Corners cr = make_corners(static_cast<float>(h) + o.y, static_cast<float>(w) + o.x, s);
  const T* xb = x + static_cast<int64_t>(n) * s.stride_n + static_cast<int64_t>(g) * s.group_channels + v * VEC;
  uint4 raw[4];
  load_corners_raw(xb, cr, raw);
  float val[4][VEC], acc[VEC];
#pragma unroll
  for (int k = 0; k < 4; ++k) unpack<T>(raw[k], val[k]);
  blend_corners<VEC>(cr, val, acc);
  store_vec<T, VEC>(out + static_cast<int64_t>(pg) * s.group_channels + v * VEC, acc);
}

// Backward of the fast path: each thread dots its vector of grad_out with the 4 corner vectors; the
// group's vecs_per_group lanes (a power of two, aligned in the warp) add their dots with xor
// shuffles in a fixed pattern (deterministic). Optionally scatters grad_x with atomics into AccT:
// fp32 (then cast by the caller), or x's 16-bit type directly (no zero-filled fp32 buffer and no
// cast pass: half the atomic traffic).
template <typename T, typename OT, typename AccT, typename Index>
__global__ void __launch_bounds__(256) das_backward_offset_vec_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ x, const OT* __restrict__ offset,
    OT* __restrict__ grad_offset, AccT* __restrict__ grad_x_accum, DasShape s, int vecs_per_group) {
  constexpr int VEC = kVec16<T>;
  const Index total = static_cast<Index>(s.n * s.h * s.w * s.groups * vecs_per_group);
  const Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x;
  const bool active = i < total;  // inactive lanes still take part in the shuffles
  const Index ii = active ? i : total - 1;
  const Index vpg = vecs_per_group, groups = s.groups, width = s.w, height = s.h;
  const Index v = ii % vpg, pg = ii / vpg;
  const Index g = pg % groups, p = pg / groups;
  const int64_t pixels = s.h * s.w, channels = s.groups * s.group_channels;
  const Index w = p % width, h = (p / width) % height, n = p / (width * height);
  const float2 o = load_offset(offset, pg);
  const Corners cr = make_corners(static_cast<float>(h) + o.y, static_cast<float>(w) + o.x, s);
  const T* xb = x + static_cast<int64_t>(n) * s.stride_n + static_cast<int64_t>(g) * s.group_channels + v * VEC;
  float go[VEC];
  load_vec<T, VEC>(grad_out + static_cast<int64_t>(pg) * s.group_channels + v * VEC, 1, go);
  uint4 raw[4];  // packed corners: fewer registers, more resident warps (bf16 f+b 0.0655 -> 0.0608 ms)
  load_corners_raw(xb, cr, raw);
  float dot[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float val[VEC];
    unpack<T>(raw[k], val);
#pragma unroll
    for (int j = 0; j < VEC; ++j) dot[k] += go[j] * val[j];
  }
  for (int width = 1; width < vecs_per_group; width *= 2) {
#pragma unroll
    for (int k = 0; k < 4; ++k) dot[k] += __shfl_xor_sync(0xffffffffu, dot[k], width);
  }
  if (!active) return;
  if (v == 0) store_offset(grad_offset, pg, offset_grad(cr, dot));
  if (grad_x_accum != nullptr) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (!cr.valid[k]) continue;
      AccT* dst = grad_x_accum + (static_cast<int64_t>(n) * pixels + cr.pix[k]) * channels +
                  static_cast<int64_t>(g) * s.group_channels + v * VEC;
      if constexpr (std::is_same_v<AccT, float>) atomic_add_scaled<VEC>(dst, go, cr.weight[k]);
      else atomic_add_scaled_packed<AccT, VEC>(dst, go, cr.weight[k]);
    }
  }
}

// Thread = one channel of one image; its column of grad_x (all H*W pixels) lives in shared memory,
// so no two threads ever add into the same address and the summation order is fixed (pixel order,
// then corner order): deterministic without atomics.
template <typename T, typename OT>
__global__ void das_backward_x_owned_kernel(const T* __restrict__ grad_out, const OT* __restrict__ offset,
                                            T* __restrict__ grad_x, DasShape s, int tile) {
  extern __shared__ float column[];  // [pixels][tile]
  const int64_t channels = s.groups * s.group_channels;
  const int64_t pixels = s.h * s.w;
  const int64_t n = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * tile + lane;
  if (c >= channels) return;  // no barriers below: an early return is safe
  for (int64_t q = 0; q < pixels; ++q) column[q * tile + lane] = 0.f;
  const int64_t g = c / s.group_channels;
  const OT* ob = offset + (n * pixels * s.groups + g) * 2;
  const T* gb = grad_out + n * pixels * channels + c;
  int64_t p = 0;
  for (int64_t h = 0; h < s.h; ++h) {
    for (int64_t w = 0; w < s.w; ++w, ++p) {
      const float2 o = load_offset(ob, p * s.groups);
      const Corners cr = make_corners(static_cast<float>(h) + o.y, static_cast<float>(w) + o.x, s);
      const float go = to_float(gb[p * channels]);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (cr.valid[k]) column[cr.pix[k] * tile + lane] += cr.weight[k] * go;
    }
  }
  T* xb = grad_x + n * pixels * channels + c;
  for (int64_t q = 0; q < pixels; ++q) xb[q * channels] = from_float<T>(column[q * tile + lane]);
}

template <typename T>
bool vector_path(const void* x, const DasShape& s) {
  constexpr int vec = kVec16<T>;
  return s.stride_c == 1 && s.group_channels % vec == 0 && s.stride_n % vec == 0 && s.stride_h % vec == 0 &&
         s.stride_w % vec == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

// The vectorised backward applies: contiguous 16-byte channel vectors, a power-of-two number of
// them per group (its shuffle groups stay inside a warp), aligned grad_out.
template <typename T>
bool vector_backward_path(const void* x, const void* grad_out, const DasShape& s) {
  const int64_t vecs = s.group_channels / kVec16<T>;
  const bool pow2 = vecs > 0 && vecs <= 32 && (vecs & (vecs - 1)) == 0;
  return vector_path<T>(x, s) && pow2 && reinterpret_cast<uintptr_t>(grad_out) % 16 == 0;
}

template <typename T, typename OT>
cudaError_t forward_typed(const void* x, const void* offset_v, void* out, const DasShape& s, cudaStream_t stream) {
  const auto* offset = static_cast<const OT*>(offset_v);
  const int64_t total = s.n * s.h * s.w * s.groups;
  const int threads = 256;
  if (vector_path<T>(x, s)) {
    const int vecs = static_cast<int>(s.group_channels / kVec16<T>);
    const int64_t blocks = (total * vecs + threads - 1) / threads;
    if (total * vecs < (int64_t{1} << 31))
      das_forward_vec_kernel<T, OT, uint32_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
          static_cast<const T*>(x), offset, static_cast<T*>(out), s, vecs);
    else
      das_forward_vec_kernel<T, OT, int64_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
          static_cast<const T*>(x), offset, static_cast<T*>(out), s, vecs);
  } else {
    das_forward_kernel<T, OT, 1><<<blocks_for(total, threads), threads, 0, stream>>>(static_cast<const T*>(x), offset,
                                                                                    static_cast<T*>(out), s);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_impl(bool offset_float, const void* x, const void* offset, void* out, const DasShape& s,
                         cudaStream_t stream) {
  return offset_float ? forward_typed<T, float>(x, offset, out, s, stream)
                      : forward_typed<T, T>(x, offset, out, s, stream);
}

template <typename T, typename OT, typename AccT>
cudaError_t backward_vec_launch(const T* go, const T* x, const OT* offset, OT* grad_offset, AccT* accum,
                                const DasShape& s, cudaStream_t stream) {
  const int threads = 256;
  const int64_t vecs = s.group_channels / kVec16<T>;
  const int64_t work = s.n * s.h * s.w * s.groups * vecs;
  const auto blocks = static_cast<unsigned>((work + threads - 1) / threads);
  if (work < (int64_t{1} << 31))
    das_backward_offset_vec_kernel<T, OT, AccT, uint32_t><<<blocks, threads, 0, stream>>>(
        go, x, offset, grad_offset, accum, s, static_cast<int>(vecs));
  else
    das_backward_offset_vec_kernel<T, OT, AccT, int64_t><<<blocks, threads, 0, stream>>>(
        go, x, offset, grad_offset, accum, s, static_cast<int>(vecs));
  return cudaGetLastError();
}

template <typename T, typename OT>
cudaError_t backward_offset_typed(const void* grad_out, const void* x_v, const void* offset_v, void* grad_offset_v,
                                  void* grad_x_accum, bool accum_float, const DasShape& s, cudaStream_t stream) {
  const int64_t total = s.n * s.h * s.w * s.groups;
  const int threads = 256;
  const auto* go = static_cast<const T*>(grad_out);
  const auto* x = static_cast<const T*>(x_v);
  const auto* offset = static_cast<const OT*>(offset_v);
  auto* grad_offset = static_cast<OT*>(grad_offset_v);
  if (vector_backward_path<T>(x, grad_out, s)) {
    if (accum_float || std::is_same_v<T, float>)
      return backward_vec_launch<T, OT, float>(go, x, offset, grad_offset, static_cast<float*>(grad_x_accum), s,
                                               stream);
    return backward_vec_launch<T, OT, T>(go, x, offset, grad_offset, static_cast<T*>(grad_x_accum), s, stream);
  }
  if (!accum_float && grad_x_accum != nullptr) return cudaErrorInvalidValue;  // see das_backward_accum_in_dtype
  auto* accum = static_cast<float*>(grad_x_accum);
  if (vector_path<T>(x, s) && reinterpret_cast<uintptr_t>(grad_out) % 16 == 0) {
    das_backward_offset_kernel<T, OT, kVec16<T>><<<blocks_for(total, threads), threads, 0, stream>>>(
        go, x, offset, grad_offset, accum, s);
  } else {
    das_backward_offset_kernel<T, OT, 1><<<blocks_for(total, threads), threads, 0, stream>>>(go, x, offset,
                                                                                            grad_offset, accum, s);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_offset_impl(bool offset_float, const void* grad_out, const void* x, const void* offset,
                                 void* grad_offset, void* grad_x_accum, bool accum_float, const DasShape& s,
                                 cudaStream_t stream) {
  return offset_float
             ? backward_offset_typed<T, float>(grad_out, x, offset, grad_offset, grad_x_accum, accum_float, s, stream)
             : backward_offset_typed<T, T>(grad_out, x, offset, grad_offset, grad_x_accum, accum_float, s, stream);
}

template <typename T, typename OT>
cudaError_t backward_x_owned_typed(const void* grad_out, const void* offset, void* grad_x, const DasShape& s,
                                   int smem_limit, cudaStream_t stream) {
  const int64_t channels = s.groups * s.group_channels;
  const int64_t column_bytes = s.h * s.w * static_cast<int64_t>(sizeof(float));
  if (column_bytes > smem_limit) return cudaErrorInvalidValue;  // H*W too large for one column
  // Widest power-of-two channel tile within 48 KB (no opt-in needed, several blocks per SM); below
  // 32 channels, use more shared memory to keep at least a warp of threads per block.
  int tile = 256;
  while (tile > 1 && (tile > channels * 2 || tile * column_bytes > 48 * 1024)) tile /= 2;
  while (tile < 32 && tile < channels && 2 * tile * column_bytes <= smem_limit) tile *= 2;
  const size_t smem = static_cast<size_t>(tile * column_bytes);
  auto kernel = das_backward_x_owned_kernel<T, OT>;
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(s.n), static_cast<unsigned>((channels + tile - 1) / tile));
  kernel<<<grid, tile, smem, stream>>>(static_cast<const T*>(grad_out), static_cast<const OT*>(offset),
                                       static_cast<T*>(grad_x), s, tile);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_x_owned_impl(bool offset_float, const void* grad_out, const void* offset, void* grad_x,
                                  const DasShape& s, int smem_limit, cudaStream_t stream) {
  return offset_float ? backward_x_owned_typed<T, float>(grad_out, offset, grad_x, s, smem_limit, stream)
                      : backward_x_owned_typed<T, T>(grad_out, offset, grad_x, s, smem_limit, stream);
}

}  // namespace


cudaError_t das_forward(DType dtype, bool offset_float, const void* x, const void* offset, void* out,
                        const DasShape& s, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, forward_impl, offset_float, x, offset, out, s, stream)
}

bool das_backward_accum_in_dtype(DType dtype, const void* x, const void* grad_out, const DasShape& s,
                                 int device_major) {
  // Packed 16-bit atomics: native 16-byte vector reductions from sm_90 on; before that the fp32
  // buffer is faster than pair atomics (bf16x2 needs a CAS loop there).
  if (device_major < 9) return false;
  switch (dtype) {
    case DType::kFloat16: return vector_backward_path<__half>(x, grad_out, s);
    case DType::kBFloat16: return vector_backward_path<__nv_bfloat16>(x, grad_out, s);
    default: return false;
  }
}

cudaError_t das_backward_offset(DType dtype, bool offset_float, const void* grad_out, const void* x,
                                const void* offset, void* grad_offset, void* grad_x_accum, bool accum_float,
                                const DasShape& s, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, backward_offset_impl, offset_float, grad_out, x, offset, grad_offset, grad_x_accum,
                   accum_float, s, stream)
}

cudaError_t das_backward_x_owned(DType dtype, bool offset_float, const void* grad_out, const void* offset,
                                 void* grad_x, const DasShape& s, int smem_limit, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, backward_x_owned_impl, offset_float, grad_out, offset, grad_x, s, smem_limit, stream)
}

}  // namespace openrec

// The fp32 selective-scan forward in one pass (included by ops_cpu.cpp). Why: the general path
// computes z, softplus, exp, dt*B*u with ATen ops before its loop, i.e. five passes over (batch, L, D)
// and as many temporaries, plus per-op overhead that dominates at batch 1 (perf note 58). Here each
// value is read once and y written once; the softplus and exp are evaluated in 16-float vectors.
//
// Accuracy against the PyTorch formulation (ATen's softplus and exp): exp below 2 ulp plus the
// polynomial's 1.3e-7 relative; log1p(w) on [0, 1] 3e-7 relative (the CUDA kernel's exact series); so
// y agrees to ~1e-6 relative, within the op's fp32 tolerance (tests/ops/test_cpu_kernels.py). NaN
// propagates, +inf overflows to inf, exp of very negative arguments underflows to 0 (results below
// 2^-126 flush to 0, as with flush-to-zero). float64 keeps the ATen terms: it is the exact reference.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu_common.h"

// These helpers pass 64-byte vectors by value; they are always inlined (no call, so no ABI to
// change), which GCC's -Wpsabi note about AVX-512 argument passing does not know. GCC reports it at
// the end of the including file, so the pragma stays on there (no push / pop).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace openrec_cpu {
namespace scan_fused {

using vf = Vec<float>::type;                                     // 16 floats
typedef int32_t vi __attribute__((vector_size(64)));              // 16 ints
constexpr int kLanes = sizeof(vf) / sizeof(float);

OPENREC_INLINE vf splat(float v) { return vf{} + v; }

// exp(x): x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor polynomial to r^7 (relative error
// < 2e-8 on that range), times 2^k built in the exponent bits. k is split as 2^(k-1) * 2 so that
// k = 128 (x just below the fp32 overflow) is representable.
OPENREC_INLINE vf vexp(vf x) {
  const vf hi = splat(88.72283f), lo = splat(-87.33654f);
  vf xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const vf t = xc * 1.44269504f;
  const vi k = __builtin_convertvector(t + (t >= 0.f ? splat(0.5f) : splat(-0.5f)), vi);  // round half away
  const vf kf = __builtin_convertvector(k, vf);
  const vf r = (xc - kf * 0.693145751953125f) - kf * 1.428606765330187e-06f;  // ln2 in two parts
  vf p = splat(1.f / 5040.f);
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const vi bits = (k - 1 + 127) << 23;  // 2^(k-1); k - 1 = -127 gives 0, i.e. underflow to 0
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  vf y = p * scale * 2.f;
  y = x > hi ? splat(__builtin_inff()) : y;
  return x != x ? x : y;  // NaN in, NaN out
}

// log1p(w) for w in [0, 1]: 2 atanh(s) with s = w / (2 + w) <= 1/3, odd series to s^13 (the CUDA
// kernel's exact fp32 form, relative error ~3e-7).
OPENREC_INLINE vf vlog1p_unit(vf w) {
  const vf s = w / (w + 2.f), s2 = s * s;
  vf p = splat(1.f / 13.f);
  p = p * s2 + 1.f / 11.f;
  p = p * s2 + 1.f / 9.f;
  p = p * s2 + 1.f / 7.f;
  p = p * s2 + 1.f / 5.f;
  p = p * s2 + 1.f / 3.f;
  p = p * s2 + 1.f;
  return 2.f * s * p;
}

// F.softplus(z) with its threshold 20: z above it, else max(z, 0) + log1p(exp(-|z|)).
OPENREC_INLINE vf vsoftplus(vf z, float threshold) {
  const vf neg_abs = z < 0.f ? z : -z;
  const vf pos = z > 0.f ? z : splat(0.f);
  const vf y = pos + vlog1p_unit(vexp(neg_abs));
  return z > threshold ? z : y;
}

// Channels [d, d + 16) of sequence b, all L steps, with the running state in h (16 lanes): loads the
// 16 values of each row at once, writes y, and saves h at the start of every chunk. `stride` is D.
// Lanes past the last channel (n_valid < 16) hold zeros and are not stored.
struct RowArgs {
  const float *u, *delta, *A, *B, *C, *D, *bias;  // u, delta at (b, 0, d); A, D, bias at d; B, C at (b, 0)
  float *y, *states;                              // y at (b, 0, d); states at (b, 0, d)
  int64_t length, stride, chunk;
  int n_valid;
  bool softplus;
  float threshold;
};

// Full blocks copy a constant 64 bytes (one vector move); the tail goes lane by lane. A memcpy of
// a run-time size here became a library call per row, with the vector registers spilled around it
// (a few percent of the loop at one thread; perf note 58).
template <bool kFull>
OPENREC_INLINE void load_lanes(vf& v, const float* p, int n) {
  if constexpr (kFull) {
    std::memcpy(&v, p, sizeof(vf));
  } else {
    v = vf{};
    for (int i = 0; i < n; ++i) v[i] = p[i];
  }
}

template <bool kFull>
OPENREC_INLINE void store_lanes(float* p, const vf& v, int n) {
  if constexpr (kFull) {
    std::memcpy(p, &v, sizeof(vf));
  } else {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
}

template <bool kFull>
OPENREC_INLINE void scan_lanes(const RowArgs& a) {
  vf A, Dskip, bias, h = {};
  load_lanes<kFull>(A, a.A, a.n_valid);
  load_lanes<kFull>(Dskip, a.D, a.n_valid);
  load_lanes<kFull>(bias, a.bias, a.n_valid);
  for (int64_t t = 0; t < a.length; ++t) {
    const int64_t row = t * a.stride;
    if (t % a.chunk == 0) store_lanes<kFull>(a.states + (t / a.chunk) * a.stride, h, a.n_valid);
    vf u, z;
    load_lanes<kFull>(u, a.u + row, a.n_valid);
    load_lanes<kFull>(z, a.delta + row, a.n_valid);
    z = z + bias;
    const vf dt = a.softplus ? vsoftplus(z, a.threshold) : z;
    const vf decay = vexp(dt * A);
    const vf drive = dt * a.B[t] * u;  // (dt * B) * u, as the formulation
    h = decay * h + drive;
    store_lanes<kFull>(a.y + row, h * a.C[t] + Dskip * u, a.n_valid);
  }
}

OPENREC_CPU_CLONES void scan_forward_lanes(const RowArgs& a) {
  if (a.n_valid == kLanes) {
    scan_lanes<true>(a);
  } else {
    scan_lanes<false>(a);
  }
}

}  // namespace scan_fused
}  // namespace openrec_cpu

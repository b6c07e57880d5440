// Selective scan with d_state = 1, channels-last (batch, L, D), fused with softplus(delta + bias) and
// the y = h*C + D*u epilogue. Specification: openrec/ops/selective_scan.py.
//
// Block = 32 channels (lanes) x kChunks chunk-threads (warps). A warp owns one chunk of kItems
// consecutive time steps for its 32 channels, so each load at a fixed t is one coalesced row. A
// "super-chunk" of kChunks * kItems steps is scanned in three steps: every warp scans its chunk
// locally (decay product, end state), the chunk carries are combined through shared memory, and
// every warp rescans its chunk from registers with the right incoming state. The state at the start
// of every chunk is saved, so the backward recomputes any chunk on its own. All math is fp32.
//
// The backward runs the super-chunks from last to first: it recomputes h in the chunk from the saved
// state, then runs the adjoint lambda_t = dy_t C_t + exp(dt_{t+1} A) lambda_{t+1} with the same
// local / carry / rescan structure. Sums over channels (dB, dC) go through a shared-memory
// transpose and are written per block; sums over time (dA, dD, dbias) stay in registers and are
// written per (batch, channel); a small finalize kernel adds the partials in a fixed order, so
// there are no atomics and the result does not depend on scheduling.
//
// Instruction count matters more than bytes here (the kernels were issue-bound, not memory-bound):
// 32-bit index arithmetic, a predicate-free path for full chunks, and softplus / exp from the
// hardware exp2 plus a short series instead of libdevice log1pf (the hardware log2 for 16-bit data,
// see log1p_unit); in 16-bit the forward also stages its inputs and output through shared-memory
// tiles (see kForwardStaged).
#include "tile_io.cuh"

namespace openrec {
namespace {

constexpr int kChunks = 8;
constexpr int kLanes = kScanChannelsPerBlock;
constexpr int kItems = kScanChunk;
constexpr int kSpan = kChunks * kItems;
#ifndef OPENREC_SCAN_FWD_BLOCKS
#define OPENREC_SCAN_FWD_BLOCKS 4
#endif
#ifndef OPENREC_SCAN_BWD_BLOCKS
#define OPENREC_SCAN_BWD_BLOCKS 3
#endif
constexpr int kForwardBlocksPerSM = OPENREC_SCAN_FWD_BLOCKS;
constexpr int kBackwardBlocksPerSM = OPENREC_SCAN_BWD_BLOCKS;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2(float x) {  // 2^x, ~2 ulp; flushes results below 2^-126 to 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float lg2(float x) {  // log2(x), absolute error ~2^-22 near 1
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// log1p(w) for w in [0, 1]. kExact (fp32 data), relative error ~3e-7: 2 atanh(s) with
// s = w / (2 + w) <= 1/3, odd series to s^13 (the first omitted term is below 2e-8 of the result).
// Otherwise (16-bit data) the hardware log2 of 1 + w: absolute error ~2e-7, so relative error only
// grows for w below ~1e-4, where dt = log1p(w) is too small to matter at 16-bit precision; half the
// instructions of the series, and the recompute of dt is the bulk of the scan's arithmetic.
template <bool kExact>
__device__ __forceinline__ float log1p_unit(float w) {
  if constexpr (!kExact) return lg2(1.f + w) * 0.6931471805599453f;
  const float s = w * rcp(2.f + w), s2 = s * s;
  float p = 1.f / 13.f;
  p = fmaf(p, s2, 1.f / 11.f);
  p = fmaf(p, s2, 1.f / 9.f);
  p = fmaf(p, s2, 1.f / 7.f);
  p = fmaf(p, s2, 1.f / 5.f);
  p = fmaf(p, s2, 1.f / 3.f);
  p = fmaf(p, s2, 1.f);
  return 2.f * s * p;
}

// dt = softplus(z) = max(z, 0) + log1p(exp(-|z|)) (equal to PyTorch's z above its threshold of 20
// to fp32 rounding) and softplus'(z) = sigmoid(z); NaN and +-inf give what F.softplus gives.
struct Discrete {
  float dt, sig;
};
template <bool kExact>
__device__ __forceinline__ Discrete discretise(float z, bool softplus) {
  if (!softplus) return {z, 1.f};
  const float w = ex2(-fabsf(z) * kLog2e);
  const float inv = rcp(1.f + w);
  return {fmaxf(z, 0.f) + log1p_unit<kExact>(w), z >= 0.f ? inv : w * inv};
}

// fp32 data gets the exact softplus; 16-bit data the cheaper one (log1p_unit).
template <typename T>
constexpr bool kExactSoftplus = sizeof(T) == 4;

// B and C of the current super-chunk, staged in shared memory as fp32 (they are the same for all
// channels of a sequence).
template <typename BT>
__device__ __forceinline__ void stage_bc(const BT* __restrict__ Bm, const BT* __restrict__ Cm, const ScanShape& s,
                                         int base, int L, float* s_B, float* s_C) {
  const int tid = threadIdx.y * kLanes + threadIdx.x;
  const int idx = tid % kSpan, t = base + idx;
  const int64_t at = blockIdx.y * s.bc_stride_batch + t * s.bc_stride_time;
  if (tid < kSpan) s_B[idx] = t < L ? to_float(Bm[at]) : 0.f;
  else if (tid < 2 * kSpan) s_C[idx] = t < L ? to_float(Cm[at]) : 0.f;
}

// Loads kItems values of one channel, `stride` elements apart; the first n_valid are real (kFull:
// all of them), the rest are 0.
template <bool kFull, typename T>
__device__ __forceinline__ void load_column(const T* __restrict__ p, int stride, int n_valid, float (&v)[kItems]) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) v[i] = (kFull || i < n_valid) ? to_float(p[i * stride]) : 0.f;
}

constexpr int kThreads = kLanes * kChunks;
template <typename T>
using ScanTile = Tile<T, kSpan, kLanes, kThreads>;

// This thread's chunk of its channel from a staged tile.
template <typename T>
__device__ __forceinline__ void read_column(const T (*tile)[kLanes], int chunk, int lane, float (&v)[kItems]) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) v[i] = to_float(tile[chunk * kItems + i][lane]);
}

// ------------------------------------------------------------------------------------------ forward
template <bool kFull, bool kExact>
__device__ __forceinline__ void forward_local(const float (&uu)[kItems], float (&decay)[kItems], float (&drive)[kItems],
                                              const float* __restrict__ bb, int n_valid, float a2, float bias_d,
                                              bool softplus, float& prod, float& h) {
  prod = 1.f;
  h = 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    if (kFull || i < n_valid) {
      const float dt = discretise<kExact>(decay[i] + bias_d, softplus).dt;  // raw delta on entry
      decay[i] = ex2(dt * a2);
      drive[i] = dt * bb[i] * uu[i];
    } else {  // identity element in the padded tail
      decay[i] = 1.f;
      drive[i] = 0.f;
    }
    h = fmaf(decay[i], h, drive[i]);
    prod *= decay[i];
  }
}

// Rescans the chunk from its incoming state h, hands each y_t = h_t C_t + D u_t to write(i, y_t),
// and returns the chunk's end state.
template <typename Write>
__device__ __forceinline__ float forward_rescan(const float (&uu)[kItems], const float (&decay)[kItems],
                                               const float (&drive)[kItems], const float* __restrict__ cc,
                                               float skip, float h, Write&& write) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    h = fmaf(decay[i], h, drive[i]);
    write(i, fmaf(h, cc[i], skip * uu[i]));
  }
  return h;
}

// The forward's 16-bit inputs and output move through shared-memory tiles (tile_io.cuh): 16-byte
// copies, issued for the next super-chunk while this one computes, and constant-offset column reads,
// instead of one 2-byte load with 64-bit address arithmetic per element and lane. In fp32 the
// column loads are already full 128-byte rows and staging measured 5-7% slower, so fp32 reads and
// writes global memory directly.
template <typename T>
constexpr bool kForwardStaged = sizeof(T) < 4;

template <typename T, typename BT>
__global__ void __launch_bounds__(kThreads, kForwardBlocksPerSM)
    scan_forward_kernel(const T* __restrict__ u, const T* __restrict__ delta, const float* __restrict__ A,
                        const BT* __restrict__ Bm, const BT* __restrict__ Cm, const float* __restrict__ Dskip,
                        const float* __restrict__ bias, T* __restrict__ y, float* __restrict__ states, ScanShape s,
                        bool vector) {
  constexpr bool kStaged = kForwardStaged<T>;
  constexpr int kTileRows = kStaged ? kSpan : 1;  // no tiles in fp32
  __shared__ __align__(16) T s_u[kTileRows][kLanes];
  __shared__ __align__(16) T s_delta[kTileRows][kLanes];
  __shared__ __align__(16) T s_y[kTileRows][kLanes];
  __shared__ float s_prod[kChunks][kLanes], s_end[kChunks][kLanes], s_carry[kLanes];
  __shared__ __align__(16) float s_B[kSpan];
  __shared__ __align__(16) float s_C[kSpan];
  const int lane = threadIdx.x, chunk = threadIdx.y, tid = chunk * kLanes + lane;
  const int L = static_cast<int>(s.length), dim = static_cast<int>(s.dim);
  const int d0 = blockIdx.x * kLanes, d = d0 + lane, n_cols = min(kLanes, dim - d0);
  const int64_t seq = static_cast<int64_t>(blockIdx.y) * L * dim + d0;  // element (b, t = 0, d0)
  const int n_states = (L + kItems - 1) / kItems;
  const bool dv = d < dim;
  const float a2 = dv ? A[d] * kLog2e : 0.f, bias_d = dv ? bias[d] : 0.f, skip = dv ? Dskip[d] : 0.f;
  float* sb = states + static_cast<int64_t>(blockIdx.y) * n_states * dim + d;
  const auto load_tiles = [&](int base) {
    if constexpr (kStaged) {
      const int64_t o = seq + static_cast<int64_t>(base) * dim;
      ScanTile<T>::load(s_u, u + o, dim, min(L - base, kSpan), n_cols, vector, tid);
      ScanTile<T>::load(s_delta, delta + o, dim, min(L - base, kSpan), n_cols, vector, tid);
    }
  };
  if (chunk == 0) s_carry[lane] = 0.f;
  load_tiles(0);
  for (int base = 0; base < L; base += kSpan) {
    const int t0 = base + chunk * kItems;
    const int n_valid = dv ? min(L - t0, kItems) : 0;  // may be <= 0 past the end
    const bool full = n_valid == kItems;
    const int64_t o0 = seq + lane + static_cast<int64_t>(t0) * dim;  // this thread's first element (direct path)
    float uu[kItems], decay[kItems], drive[kItems];
    if (!kStaged) {
      if (full) {
        load_column<true>(u + o0, dim, n_valid, uu);
        load_column<true>(delta + o0, dim, n_valid, decay);  // raw delta for now
      } else {
        load_column<false>(u + o0, dim, n_valid, uu);
        load_column<false>(delta + o0, dim, n_valid, decay);
      }
    }
    stage_bc(Bm, Cm, s, base, L, s_B, s_C);
    copy_async_wait_all();
    __syncthreads();  // tiles, s_B / s_C and the previous super-chunk's s_carry are visible
    if (kStaged) {
      read_column(s_u, chunk, lane, uu);
      read_column(s_delta, chunk, lane, decay);  // raw delta for now
    }
    const float* bb = s_B + chunk * kItems;  // this chunk's B and C (shared-memory broadcasts)
    const float* cc = s_C + chunk * kItems;
    float prod, h;
    if (full) forward_local<true, kExactSoftplus<T>>(uu, decay, drive, bb, n_valid, a2, bias_d, s.softplus, prod, h);
    else forward_local<false, kExactSoftplus<T>>(uu, decay, drive, bb, n_valid, a2, bias_d, s.softplus, prod, h);
    s_prod[chunk][lane] = prod;
    s_end[chunk][lane] = h;
    __syncthreads();  // input tiles consumed; chunk summaries visible
    if (base + kSpan < L) load_tiles(base + kSpan);  // arrives while this super-chunk finishes
    h = s_carry[lane];
    for (int j = 0; j < chunk; ++j) h = fmaf(s_prod[j][lane], h, s_end[j][lane]);
    if (n_valid > 0) sb[static_cast<int64_t>(t0 / kItems) * dim] = h;
    T* yp = y + o0;
    if (kStaged)  // rows past the end are written to the tile but never stored
      h = forward_rescan(uu, decay, drive, cc, skip, h,
                         [&](int i, float v) { s_y[chunk * kItems + i][lane] = from_float<T>(v); });
    else if (full)
      h = forward_rescan(uu, decay, drive, cc, skip, h, [&](int i, float v) { yp[i * dim] = from_float<T>(v); });
    else
      h = forward_rescan(uu, decay, drive, cc, skip, h, [&](int i, float v) {
        if (i < n_valid) yp[i * dim] = from_float<T>(v);
      });
    __syncthreads();  // s_y complete; all reads of s_carry / s_prod / s_end / s_B / s_C are done
    if constexpr (kStaged)
      ScanTile<T>::store(s_y, y + seq + static_cast<int64_t>(base) * dim, dim, min(L - base, kSpan), n_cols, vector,
                         tid);
    if (chunk == kChunks - 1) s_carry[lane] = h;
  }
}

// ----------------------------------------------------------------------------------------- backward
// Recomputes the chunk's forward from its starting state h: dt, sigmoid(z), h_{t-1}; h ends as the
// chunk's end state.
template <bool kFull, bool kExact>
__device__ __forceinline__ void backward_recompute(const float (&uu)[kItems], float (&dtv)[kItems], float (&sig)[kItems],
                                                   float (&hprev)[kItems], const float* __restrict__ bb, int n_valid,
                                                   float a2, float bias_d, bool softplus, float& h) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    float decay = 1.f, drive = 0.f;
    if (kFull || i < n_valid) {
      const Discrete q = discretise<kExact>(dtv[i] + bias_d, softplus);  // raw delta on entry
      dtv[i] = q.dt;
      sig[i] = q.sig;
      decay = ex2(q.dt * a2);
      drive = q.dt * bb[i] * uu[i];
    } else {
      dtv[i] = 0.f;  // exp(0 * A) = 1: the padded tail stays the identity
      sig[i] = 0.f;
    }
    hprev[i] = h;
    h = fmaf(decay, h, drive);
  }
}

// Local adjoint with no carry: first = decay_s * lambda_s, prod = product of the chunk's decays.
__device__ __forceinline__ void backward_local(const float (&dtv)[kItems], const float (&gyv)[kItems],
                                               const float* __restrict__ cc, float a2, float& first, float& prod) {
  first = 0.f;
  prod = 1.f;
#pragma unroll
  for (int i = kItems - 1; i >= 0; --i) {
    const float decay = ex2(dtv[i] * a2);
    first = decay * fmaf(gyv[i], cc[i], first);
    prod *= decay;
  }
}

struct Sums {
  float dA, dD, dbias;
};

// The adjoint pass over the chunk, from the lambda entering it from the right (`next`): writes du,
// ddelta and the per-item channel-sum inputs, accumulates the time sums, and returns the lambda
// (times decay) that leaves the chunk to the left. h_t is read from hprev[t + 1] (h_end for the
// last item), not recomputed.
template <bool kFull, typename T>
__device__ __forceinline__ float backward_store(T* __restrict__ dup, T* __restrict__ ddp, int stride, int n_valid,
                                               const float (&uu)[kItems], const float (&dtv)[kItems],
                                               const float (&sig)[kItems], const float (&hprev)[kItems], float h_end,
                                               const float (&gyv)[kItems], const float* __restrict__ bb,
                                               const float* __restrict__ cc, float a, float a2, float skip, float next,
                                               float (*red_b)[kLanes + 1], float (*red_c)[kLanes + 1], Sums& acc) {
  const int lane = threadIdx.x;
#pragma unroll
  for (int i = kItems - 1; i >= 0; --i) {
    const bool valid = kFull || i < n_valid;
    const float decay = ex2(dtv[i] * a2);
    const float lam = fmaf(gyv[i], cc[i], next);
    const float lam_dt = lam * dtv[i];
    const float lam_h_decay = lam * hprev[i] * decay;
    const float d_dt = fmaf(lam * bb[i], uu[i], lam_h_decay * a);
    const float dz = d_dt * sig[i];
    if (valid) {
      dup[i * stride] = from_float<T>(fmaf(lam_dt, bb[i], gyv[i] * skip));
      ddp[i * stride] = from_float<T>(dz);
    }
    // Invalid items have dt = 0 and gy = u = 0, so they add exactly 0 to every sum.
    acc.dA = fmaf(lam_h_decay, dtv[i], acc.dA);
    acc.dD = fmaf(gyv[i], uu[i], acc.dD);
    acc.dbias += dz;
    const float h_t = i + 1 < kItems ? hprev[i + 1] : h_end;
    red_b[i][lane] = lam_dt * uu[i];
    red_c[i][lane] = gyv[i] * h_t;
    next = decay * lam;
  }
  return next;
}

template <typename T, typename BT>
__global__ void __launch_bounds__(kThreads, kBackwardBlocksPerSM)
    scan_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ u, const T* __restrict__ delta,
                         const float* __restrict__ A, const BT* __restrict__ Bm, const BT* __restrict__ Cm,
                         const float* __restrict__ Dskip, const float* __restrict__ bias,
                         const float* __restrict__ states, T* __restrict__ du, T* __restrict__ ddelta,
                         float* __restrict__ dB_part, float* __restrict__ dC_part, float* __restrict__ dA_part,
                         float* __restrict__ dD_part, float* __restrict__ dbias_part, ScanShape s) {
  __shared__ float s_prod[kChunks][kLanes], s_first[kChunks][kLanes], s_carry[kLanes];
  __shared__ __align__(16) float s_B[kSpan];
  __shared__ __align__(16) float s_C[kSpan];
  __shared__ float s_red[kChunks][2][kItems][kLanes + 1];  // per-warp transpose for the channel sums
  const int lane = threadIdx.x, chunk = threadIdx.y;
  const int L = static_cast<int>(s.length), dim = static_cast<int>(s.dim);
  const int d = blockIdx.x * kLanes + lane;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * L;
  const int n_states = (L + kItems - 1) / kItems;
  const int n_tiles = gridDim.x;
  const bool dv = d < dim;
  const float a = dv ? A[d] : 0.f, a2 = a * kLog2e, bias_d = dv ? bias[d] : 0.f, skip = dv ? Dskip[d] : 0.f;
  const int64_t off = row * dim + d;
  const float* sb = states + static_cast<int64_t>(blockIdx.y) * n_states * dim + d;
  float* dB_row = dB_part + (static_cast<int64_t>(blockIdx.y) * n_tiles + blockIdx.x) * L;
  float* dC_row = dC_part + (static_cast<int64_t>(blockIdx.y) * n_tiles + blockIdx.x) * L;
  Sums acc{0.f, 0.f, 0.f};
  if (chunk == 0) s_carry[lane] = 0.f;
  const int n_super = (L + kSpan - 1) / kSpan;
  for (int sc = n_super - 1; sc >= 0; --sc) {
    const int base = sc * kSpan, t0 = base + chunk * kItems;
    const int n_valid = dv ? min(L - t0, kItems) : 0;
    const bool full = n_valid == kItems;
    const int64_t o0 = off + static_cast<int64_t>(t0) * dim;
    float uu[kItems], dtv[kItems], gyv[kItems], sig[kItems], hprev[kItems];
    if (full) {
      load_column<true>(u + o0, dim, n_valid, uu);
      load_column<true>(delta + o0, dim, n_valid, dtv);  // raw delta for now
      load_column<true>(grad_y + o0, dim, n_valid, gyv);
    } else {
      load_column<false>(u + o0, dim, n_valid, uu);
      load_column<false>(delta + o0, dim, n_valid, dtv);
      load_column<false>(grad_y + o0, dim, n_valid, gyv);
    }
    float h = n_valid > 0 ? sb[static_cast<int64_t>(t0 / kItems) * dim] : 0.f;  // chunk start, then end
    stage_bc(Bm, Cm, s, base, L, s_B, s_C);
    __syncthreads();  // s_B / s_C staged; the later super-chunk's s_carry is visible
    const float* bb = s_B + chunk * kItems;
    const float* cc = s_C + chunk * kItems;
    if (full) backward_recompute<true, kExactSoftplus<T>>(uu, dtv, sig, hprev, bb, n_valid, a2, bias_d, s.softplus, h);
    else backward_recompute<false, kExactSoftplus<T>>(uu, dtv, sig, hprev, bb, n_valid, a2, bias_d, s.softplus, h);
    float first, prod;
    backward_local(dtv, gyv, cc, a2, first, prod);
    s_prod[chunk][lane] = prod;
    s_first[chunk][lane] = first;
    __syncthreads();
    float next = s_carry[lane];
    for (int j = kChunks - 1; j > chunk; --j) next = fmaf(s_prod[j][lane], next, s_first[j][lane]);
    next = full ? backward_store<true>(du + o0, ddelta + o0, dim, n_valid, uu, dtv, sig, hprev, h, gyv, bb, cc, a, a2,
                                       skip, next, s_red[chunk][0], s_red[chunk][1], acc)
                : backward_store<false>(du + o0, ddelta + o0, dim, n_valid, uu, dtv, sig, hprev, h, gyv, bb, cc, a,
                                        a2, skip, next, s_red[chunk][0], s_red[chunk][1], acc);
    __syncwarp();
    {  // each (dB or dC, item) pair's sum over the 32 channels: kSplit lanes add a share each, then shuffle
      constexpr int kPairs = 2 * kItems, kSplit = kLanes / kPairs, kShare = kLanes / kSplit;
      static_assert(kLanes % kPairs == 0, "a warp must cover every (dB or dC, item) pair");
      const int pair = lane % kPairs, part = lane / kPairs;
      const int which = pair / kItems, item = pair % kItems;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kShare; ++j) sum += s_red[chunk][which][item][part * kShare + j];
#pragma unroll
      for (int offset = kPairs; offset < kLanes; offset *= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
      const int t = t0 + item;
      if (part == 0 && t < L) (which == 0 ? dB_row : dC_row)[t] = sum;
    }
    __syncthreads();  // all reads of shared memory of this super-chunk are done
    if (chunk == 0) s_carry[lane] = next;
  }
  // Sum the chunk-threads' accumulators in a fixed order.
  __syncthreads();
  s_prod[chunk][lane] = acc.dA;
  s_first[chunk][lane] = acc.dD;
  s_red[chunk][0][0][lane] = acc.dbias;
  __syncthreads();
  if (chunk == 0 && dv) {
    float sa = 0.f, sd = 0.f, sbias = 0.f;
    for (int j = 0; j < kChunks; ++j) {
      sa += s_prod[j][lane];
      sd += s_first[j][lane];
      sbias += s_red[j][0][0][lane];
    }
    const int64_t i = static_cast<int64_t>(blockIdx.y) * dim + d;
    dA_part[i] = sa;
    dD_part[i] = sd;
    dbias_part[i] = sbias;
  }
}

// Adds the backward's partial sums in a fixed order: dB, dC over the channel tiles (one thread per
// (batch, t)); dA, dD, dbias over the batch (blocks after the first n_bc_blocks: 32 channels x 32
// warps, each warp a strided slice of the batch, then the warps in order).
constexpr int kFinalizeThreads = 1024;

template <typename BT>
__global__ void __launch_bounds__(kFinalizeThreads)
    scan_finalize_kernel(const float* __restrict__ dB_part, const float* __restrict__ dC_part,
                         const float* __restrict__ dA_part, const float* __restrict__ dD_part,
                         const float* __restrict__ dbias_part, BT* __restrict__ dB, BT* __restrict__ dC,
                         float* __restrict__ dA, float* __restrict__ dD, float* __restrict__ dbias, int batch, int L,
                         int dim, int n_tiles, int n_bc_blocks) {
  if (static_cast<int>(blockIdx.x) < n_bc_blocks) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kFinalizeThreads + threadIdx.x;
    if (i >= static_cast<int64_t>(batch) * L) return;
    const int64_t b = i / L, t = i % L;
    float sb = 0.f, sc = 0.f;
    for (int j = 0; j < n_tiles; ++j) {
      sb += dB_part[(b * n_tiles + j) * L + t];
      sc += dC_part[(b * n_tiles + j) * L + t];
    }
    dB[i] = from_float<BT>(sb);
    dC[i] = from_float<BT>(sc);
    return;
  }
  __shared__ float s_sum[3][32][33];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int d = (blockIdx.x - n_bc_blocks) * 32 + lane;
  float sa = 0.f, sd = 0.f, sbias = 0.f;
  if (d < dim) {
    for (int b = warp; b < batch; b += 32) {
      const int64_t i = static_cast<int64_t>(b) * dim + d;
      sa += dA_part[i];
      sd += dD_part[i];
      sbias += dbias_part[i];
    }
  }
  s_sum[0][warp][lane] = sa;
  s_sum[1][warp][lane] = sd;
  s_sum[2][warp][lane] = sbias;
  __syncthreads();
  if (warp < 3 && d < dim) {
    float total = 0.f;
    for (int w = 0; w < 32; ++w) total += s_sum[warp][w][lane];
    (warp == 0 ? dA : warp == 1 ? dD : dbias)[d] = total;
  }
}

template <typename T, typename BT>
cudaError_t forward_typed(const void* u, const void* delta, const float* A, const void* Bm, const void* Cm,
                          const float* Dskip, const float* bias, void* y, float* states, const ScanShape& s,
                          cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.dim + kLanes - 1) / kLanes), static_cast<unsigned>(s.batch));
  const dim3 block(kLanes, kChunks);
  const bool vector = ScanTile<T>::vector_ok(u, s.dim) && ScanTile<T>::vector_ok(delta, s.dim) &&
                      ScanTile<T>::vector_ok(y, s.dim);
  scan_forward_kernel<T, BT><<<grid, block, 0, stream>>>(
      static_cast<const T*>(u), static_cast<const T*>(delta), A, static_cast<const BT*>(Bm),
      static_cast<const BT*>(Cm), Dskip, bias, static_cast<T*>(y), states, s, vector);
  return cudaGetLastError();
}

bool shape_fits(const ScanShape& s) {
  // 32-bit time and element-in-row indices; rows of (L * D) are addressed with 64 bits.
  return s.batch <= 65535 && s.length * s.dim < (int64_t{1} << 31) && s.length * s.batch < (int64_t{1} << 31);
}

template <typename T>
cudaError_t forward_impl(bool bc_float, const void* u, const void* delta, const float* A, const void* Bm,
                         const void* Cm, const float* Dskip, const float* bias, void* y, float* states,
                         const ScanShape& s, cudaStream_t stream) {
  if (!shape_fits(s)) return cudaErrorInvalidValue;
  return bc_float ? forward_typed<T, float>(u, delta, A, Bm, Cm, Dskip, bias, y, states, s, stream)
                  : forward_typed<T, T>(u, delta, A, Bm, Cm, Dskip, bias, y, states, s, stream);
}

template <typename T, typename BT>
cudaError_t backward_typed(const void* grad_y, const void* u, const void* delta, const float* A, const void* Bm,
                           const void* Cm, const float* Dskip, const float* bias, const float* states, void* du,
                           void* ddelta, void* dB, void* dC, float* dA, float* dD, float* dbias, float* workspace,
                           const ScanShape& s, cudaStream_t stream) {
  const int n_tiles = static_cast<int>((s.dim + kLanes - 1) / kLanes);
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(s.batch));
  const dim3 block(kLanes, kChunks);
  float* dB_part = workspace;
  float* dC_part = dB_part + s.batch * n_tiles * s.length;
  float* dA_part = dC_part + s.batch * n_tiles * s.length;
  float* dD_part = dA_part + s.batch * s.dim;
  float* dbias_part = dD_part + s.batch * s.dim;
  scan_backward_kernel<T, BT><<<grid, block, 0, stream>>>(
      static_cast<const T*>(grad_y), static_cast<const T*>(u), static_cast<const T*>(delta), A,
      static_cast<const BT*>(Bm), static_cast<const BT*>(Cm), Dskip, bias, states, static_cast<T*>(du),
      static_cast<T*>(ddelta), dB_part, dC_part, dA_part, dD_part, dbias_part, s);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int n_bc_blocks = static_cast<int>((s.batch * s.length + kFinalizeThreads - 1) / kFinalizeThreads);
  const int n_d_blocks = static_cast<int>((s.dim + 31) / 32);
  scan_finalize_kernel<BT><<<n_bc_blocks + n_d_blocks, kFinalizeThreads, 0, stream>>>(
      dB_part, dC_part, dA_part, dD_part, dbias_part, static_cast<BT*>(dB), static_cast<BT*>(dC), dA, dD, dbias,
      static_cast<int>(s.batch), static_cast<int>(s.length), static_cast<int>(s.dim), n_tiles, n_bc_blocks);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_impl(bool bc_float, const void* grad_y, const void* u, const void* delta, const float* A,
                          const void* Bm, const void* Cm, const float* Dskip, const float* bias, const float* states,
                          void* du, void* ddelta, void* dB, void* dC, float* dA, float* dD, float* dbias,
                          float* workspace, const ScanShape& s, cudaStream_t stream) {
  if (!shape_fits(s)) return cudaErrorInvalidValue;
  return bc_float ? backward_typed<T, float>(grad_y, u, delta, A, Bm, Cm, Dskip, bias, states, du, ddelta, dB, dC,
                                             dA, dD, dbias, workspace, s, stream)
                  : backward_typed<T, T>(grad_y, u, delta, A, Bm, Cm, Dskip, bias, states, du, ddelta, dB, dC, dA,
                                         dD, dbias, workspace, s, stream);
}

}  // namespace

int64_t scan_backward_workspace_floats(const ScanShape& s) {
  const int64_t n_tiles = (s.dim + kLanes - 1) / kLanes;
  return 2 * s.batch * n_tiles * s.length + 3 * s.batch * s.dim;
}

cudaError_t scan_forward(DType dtype, bool bc_float, const void* u, const void* delta, const float* A, const void* Bm,
                         const void* Cm, const float* Dskip, const float* bias, void* y, float* states,
                         const ScanShape& s, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, forward_impl, bc_float, u, delta, A, Bm, Cm, Dskip, bias, y, states, s, stream)
}

cudaError_t scan_backward(DType dtype, bool bc_float, const void* grad_y, const void* u, const void* delta,
                          const float* A, const void* Bm, const void* Cm, const float* Dskip, const float* bias,
                          const float* states, void* du, void* ddelta, void* dB, void* dC, float* dA, float* dD,
                          float* dbias, float* workspace, const ScanShape& s, cudaStream_t stream) {
  OPENREC_DISPATCH(dtype, backward_impl, bc_float, grad_y, u, delta, A, Bm, Cm, Dskip, bias, states, du, ddelta, dB,
                   dC, dA, dD, dbias, workspace, s, stream)
}

}  // namespace openrec

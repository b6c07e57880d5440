// Depthwise 3x3 convolution (stride 1, zero padding 1) on channels-last maps, with its bias and the
// DA-Mamba block's epilogues fused, forward and backward. Specification: openrec/ops/dwconv.py.
//
// Why: every DA-Mamba block has four of these (the ResDWC position encoding, DASSM's conv + SiLU,
// the DAS offset branch, the ConvFFN's ResDWC). With cuDNN on channels-last maps each one is a
// convolution, a separate broadcast kernel for the bias and a separate add or SiLU; in training a
// data-gradient and a weight-gradient convolution and a slow column sum for the bias gradient (perf
// note 34).
//
// Layout: x (N, H, W, C) contiguous, C % 4 == 0. The image rows of all images are one axis of N*H
// rows. A block owns a tile of kTH rows x kTW columns x 64 bytes of channels (32 channels in 16 bits,
// 16 in fp32) and first copies the input it needs, the tile plus a one-pixel halo, into shared memory
// with 16-byte cp.async (8-byte where channels or storage are not 16-byte aligned): every load of the
// block is in flight at once and each input byte crosses from L2 about (kTH+2)(kTW+2)/(kTH kTW) times.
// (The previous kernel loaded each thread's window straight from global memory, three rows a column,
// one column after another: latency-bound, 33-39% of the copy bandwidth in bf16; perf note 37.) Then a
// thread owns 4 channels of kSeg consecutive output columns of one row and slides the 3x3 window along
// them in shared memory. A row whose neighbour lies in another image (or outside the map) reads a
// zero row instead. Tile rows are (kTW + 3) pixels apart, so the rows a warp reads start 64 bytes
// apart modulo 128: no shared-memory bank conflicts.
//
// Backward: pass 1 (wgrad) stages the x tile and the grad_y tile the same way and walks the same
// windows with grad_y at the centre. It forms the pre-bias gradient g (grad_y, or grad_y * silu'(z)
// with z recomputed from x), writes g when the epilogue is SiLU, and accumulates sum g * x_tap and
// sum g per thread over the tiles its block visits; the block adds its threads' sums (warp shuffles,
// then the warps in shared memory) and writes one partial per block, and a finalize kernel adds the
// blocks in a fixed order (no atomics: deterministic). Pass 2 is the forward kernel on g with the
// taps flipped (the transposed convolution), plus grad_y itself for the residual epilogue; with the
// GELU epilogue the block also stages its tile of the forward's pre-activation, for gelu' at the
// centre pixel.
#include <initializer_list>

#include "common.cuh"
#include "tile_io.cuh"

namespace openrec {
namespace {

constexpr int kSeg = 8;        // output columns per thread
constexpr int kV = 4;          // channels per thread
constexpr int kGroups = 10;    // per channel: 9 weight taps + the bias
constexpr int kPixBytes = 64;  // bytes of one pixel's channels in a tile
constexpr int kTW = 32;        // output columns of a tile
constexpr int kSegs = kTW / kSeg;
constexpr int kInCols = kTW + 2;                       // with the halo
constexpr int kRowPitch = (kInCols + 1) * kPixBytes;  // one pixel of padding: 2240 B, 64 mod 128
constexpr int kGPitch = (kTW + 1) * kPixBytes;        // rows of the backward's grad_y tile, likewise

constexpr int kTH = 8;         // output rows of a tile

template <typename T>
struct TileShape {
  static constexpr int kCT = kPixBytes / static_cast<int>(sizeof(T));  // channels: 32 (16-bit), 16 (fp32)
  static constexpr int kCVT = kCT / kV;                                // 4-channel vectors: 8 / 4
  static constexpr int kItems = kTH * kSegs;                           // (row, segment) items: 32
  static constexpr int kThreads = kItems * kCVT;                       // 256 (16-bit) / 128 (fp32)
  static constexpr int kMinBlocks = 512 / kThreads;                    // 16 warps an SM: <= 128 registers
  // The GELU convolutions (mode 3) compute long enough between their loads that a third resident
  // block an SM pays in 16 bits (<= 80 registers, a few spills): -6% forward at 4C channels, while the
  // other modes and small maps lost 3-5% that way (perf note 42).
  static constexpr int kGeluMinBlocks = sizeof(T) == 4 ? kMinBlocks : 768 / kThreads;
  static constexpr int kInRows = kTH + 2;
  static constexpr int kXBytes = (kInRows + 1) * kRowPitch;  // the x tile and one zero row
  static constexpr int kGBytes = kTH * kGPitch;              // the grad_y tile of the backward (no halo)
};

// Shared by host and device: the map and how it splits into tiles.
struct Geometry {
  int64_t nh;     // N * H image rows
  int h, w, c;
  int col_tiles;  // tiles across W
  int64_t tiles;  // row tiles x column tiles
};

template <typename T>
Geometry geometry(int64_t n, int h, int w, int c) {
  Geometry g;
  g.nh = n * h;
  g.h = h;
  g.w = w;
  g.c = c;
  g.col_tiles = (w + kTW - 1) / kTW;
  g.tiles = (g.nh + kTH - 1) / kTH * g.col_tiles;
  return g;
}

// Starts the copy of the rows [r0 + row_lo, r0 + row_lo + ROWS) x columns [w0 + col_lo, ...
// + COLS) x channels [c0, c0 + kCT) of the map g into smem (rows kRowPitch apart, pixels kPixBytes
// apart); what lies outside the map or past channel C reads as zeros.
template <typename T, int CH, int ROWS, int COLS, int NT>
__device__ __forceinline__ void start_tile_copy(char* smem, int pitch, const T* __restrict__ g, const Geometry& geo,
                                                int64_t r0, int w0, int c0) {
  constexpr int kChunks = kPixBytes / CH;
  constexpr int kElems = CH / static_cast<int>(sizeof(T));
  constexpr int kTotal = ROWS * COLS * kChunks;
  for (int i = threadIdx.x; i < kTotal; i += NT) {
    const int chunk = i % kChunks, pix = i / kChunks;
    const int col = pix % COLS, row = pix / COLS;
    const int64_t r = r0 + row;
    const int w = w0 + col, c = c0 + chunk * kElems;
    const bool ok = r >= 0 && r < geo.nh && w >= 0 && w < geo.w && c < geo.c;
    const T* src = ok ? g + (r * geo.w + w) * static_cast<int64_t>(geo.c) + c : g;
    copy_async<CH>(smem + row * pitch + col * kPixBytes + chunk * CH, src, ok);
  }
}

template <typename T> struct Raw4;
template <> struct Raw4<float> { using type = float4; };
template <> struct Raw4<__half> { using type = uint2; };
template <> struct Raw4<__nv_bfloat16> { using type = uint2; };

// Four channels as floats from shared memory (one 8- or 16-byte load).
template <typename T>
__device__ __forceinline__ void read4(const char* p, float (&v)[kV]) {
  using R = typename Raw4<T>::type;
  const R raw = *reinterpret_cast<const R*>(p);
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

// Rows r-1, r, r+1 of one tile column: `rows` holds the three row starts (already offset to the
// thread's channels), `col` the tile column.
template <typename T>
__device__ __forceinline__ void read_column(const char* const (&rows)[3], int col, float (&v)[3][kV]) {
#pragma unroll
  for (int r = 0; r < 3; ++r) read4<T>(rows[r] + col * kPixBytes, v[r]);
}

__device__ __forceinline__ float sigmoid_fast(float z) { return 1.f / (1.f + __expf(-z)); }

// The exact (erf) GELU and its derivative Phi(a) + a phi(a), as nn.GELU() computes them.
__device__ __forceinline__ float gelu_exact(float a) { return 0.5f * a * (1.f + erff(a * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_grad(float a) {
  return 0.5f * (1.f + erff(a * 0.70710678118654752f)) + a * 0.39894228040143268f * __expf(-0.5f * a * a);
}

// Replaces every element of a staged tile (ROWS rows of kInCols pixels) by gelu(element) rounded to T,
// what the unfused path stores between its GELU and its convolution. Zero padding stays zero.
template <typename T, int ROWS, int NT>
__device__ __forceinline__ void gelu_tile(char* tile) {
  constexpr int kChunks = kPixBytes / 16, kTotal = ROWS * kInCols * kChunks;
  for (int i = threadIdx.x; i < kTotal; i += NT) {
    const int chunk = i % kChunks, pix = i / kChunks;
    uint4* p = reinterpret_cast<uint4*>(tile + (pix / kInCols) * kRowPitch + (pix % kInCols) * kPixBytes + chunk * 16);
    uint4 raw = *p;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < kVec16<T>; ++j) e[j] = from_float<T>(gelu_exact(to_float(e[j])));
    *p = raw;
  }
}

// Stages the tile's weights as s_w[tap][channel] (FLIP: tap 8 - t) and its bias (zeros for null).
template <typename W, bool FLIP, int CT, int NT>
__device__ __forceinline__ void stage_weights(const W* __restrict__ weight, const W* __restrict__ bias, int c0,
                                              int n_ch, float* s_w, float* s_b) {
  for (int i = threadIdx.x; i < CT * 9; i += NT) {
    const int c = i / 9, t = i % 9;
    s_w[(FLIP ? 8 - t : t) * CT + c] = c < n_ch ? to_float(weight[static_cast<int64_t>(c0 + c) * 9 + t]) : 0.f;
  }
  for (int i = threadIdx.x; i < CT; i += NT) s_b[i] = (bias != nullptr && i < n_ch) ? to_float(bias[c0 + i]) : 0.f;
}

// The staged weights and bias of this thread's four channels, into registers.
template <int CT>
__device__ __forceinline__ void load_weights(const float* s_w, const float* s_b, int tx, float (&wt)[9][kV],
                                             float (&b)[kV]) {
#pragma unroll
  for (int t = 0; t < 9; ++t) {
    const float4 q = *reinterpret_cast<const float4*>(s_w + t * CT + tx * kV);
    wt[t][0] = q.x; wt[t][1] = q.y; wt[t][2] = q.z; wt[t][3] = q.w;
  }
  const float4 q = *reinterpret_cast<const float4*>(s_b + tx * kV);
  b[0] = q.x; b[1] = q.y; b[2] = q.z; b[3] = q.w;
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

// window_sum for the thread's four channels with the weights read from shared memory (s_w[tap][channel],
// the bias s_b): the same fma order, so the same z bits; for the SiLU weight gradient, which has no
// registers to spare for the weights.
template <int CT>
__device__ __forceinline__ void window_sums_shared(const float* s_w, const float* s_b, int tx,
                                                   const float (&left)[3][kV], const float (&mid)[3][kV],
                                                   const float (&right)[3][kV], float (&z)[kV]) {
  const float4 b4 = *reinterpret_cast<const float4*>(s_b + tx * kV);
  z[0] = b4.x; z[1] = b4.y; z[2] = b4.z; z[3] = b4.w;
#pragma unroll
  for (int r = 0; r < 3; ++r) {
    const float(*cols[3])[kV] = {&left[r], &mid[r], &right[r]};
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      const float4 w4 = *reinterpret_cast<const float4*>(s_w + (3 * r + k) * CT + tx * kV);
      const float wv[kV] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
      for (int j = 0; j < kV; ++j) z[j] = fmaf(wv[j], (*cols[k])[j], z[j]);
    }
  }
}

// Moves the window one column to the right (right is read next).
__device__ __forceinline__ void slide(float (&left)[3][kV], float (&mid)[3][kV], const float (&right)[3][kV]) {
#pragma unroll
  for (int r = 0; r < 3; ++r)
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      left[r][j] = mid[r][j];
      mid[r][j] = right[r][j];
    }
}

// The thread's place in a tile: channel vector tx, tile row rr, segment seg. Items run down the rows
// first, so the four items of a 16-bit warp are four rows (conflict-free, see the header).
template <typename T>
struct Place {
  int tx, rr, seg;
  __device__ __forceinline__ Place() {
    tx = threadIdx.x % TileShape<T>::kCVT;
    const int item = threadIdx.x / TileShape<T>::kCVT;
    rr = item % kTH;
    seg = item / kTH;
  }
};

// Starts of the three input rows of output row r (tile row rr) at channel vector tx: the tile's rows
// rr, rr+1, rr+2, or the zero row for a neighbour in another image or outside the map.
template <typename T>
__device__ __forceinline__ void window_rows(const char* tile, int rr, int64_t r, int tx, int H,
                                            const char* (&rows)[3]) {
  const int h = static_cast<int>(r % H);
  const int off = tx * kV * static_cast<int>(sizeof(T));
  const char* zero = tile + TileShape<T>::kInRows * kRowPitch + off;
  rows[0] = h > 0 ? tile + rr * kRowPitch + off : zero;
  rows[1] = tile + (rr + 1) * kRowPitch + off;
  rows[2] = h < H - 1 ? tile + (rr + 2) * kRowPitch + off : zero;
}

template <int NT>
__device__ __forceinline__ void zero_bytes(char* p, int bytes) {
  for (int i = threadIdx.x; i < bytes / 16; i += NT) reinterpret_cast<uint4*>(p)[i] = make_uint4(0, 0, 0, 0);
}

// y = epilogue(conv(x) + bias). MODE 0: plain; 1: + x (residual); 2: SiLU; 3: g + conv(g) + bias with
// g = gelu(x) (the tile is turned into g first). FLIP: the transposed convolution (grad x of a plain
// convolution), bias null; with MODE 3 it is grad_x = (x + conv^T(x)) * gelu'(aux), x being grad_y
// and aux the forward's pre-activation. One tile per block.
template <typename T, typename W, int MODE, bool FLIP, int CH>
__global__ void __launch_bounds__(TileShape<T>::kThreads,
                                  MODE == 3 ? TileShape<T>::kGeluMinBlocks : TileShape<T>::kMinBlocks)
    dwconv_kernel(const T* __restrict__ x, const W* __restrict__ weight, const W* __restrict__ bias,
                  const T* __restrict__ aux, T* __restrict__ y, Geometry geo) {
  using S = TileShape<T>;
  __shared__ __align__(16) char s_tile[S::kXBytes];
  __shared__ __align__(16) float s_w[9 * S::kCT];
  __shared__ __align__(16) float s_b[S::kCT];
  constexpr bool kGeluGrad = MODE == 3 && FLIP;
  __shared__ __align__(16) char s_aux[kGeluGrad ? S::kGBytes : 16];  // gelu'(aux) reads aux at the centre
  const int64_t r0 = static_cast<int64_t>(blockIdx.x / geo.col_tiles) * kTH;
  const int w0 = static_cast<int>(blockIdx.x % geo.col_tiles) * kTW;
  const int c0 = blockIdx.y * S::kCT;
  start_tile_copy<T, CH, S::kInRows, kInCols, S::kThreads>(s_tile, kRowPitch, x, geo, r0 - 1, w0 - 1, c0);
  if constexpr (kGeluGrad) start_tile_copy<T, CH, kTH, kTW, S::kThreads>(s_aux, kGPitch, aux, geo, r0, w0, c0);
  zero_bytes<S::kThreads>(s_tile + S::kInRows * kRowPitch, kRowPitch);
  stage_weights<W, FLIP, S::kCT, S::kThreads>(weight, bias, c0, min(S::kCT, geo.c - c0), s_w, s_b);
  copy_async_wait_all();
  __syncthreads();
  if constexpr (MODE == 3 && !FLIP) {
    gelu_tile<T, S::kInRows, S::kThreads>(s_tile);
    __syncthreads();
  }
  const Place<T> p;
  const int64_t r = r0 + p.rr;
  const int c = c0 + p.tx * kV;
  if (r >= geo.nh || c >= geo.c) return;
  float wt[9][kV], b[kV];
  load_weights<S::kCT>(s_w, s_b, p.tx, wt, b);
  const char* rows[3];
  window_rows<T>(s_tile, p.rr, r, p.tx, geo.h, rows);
  T* out = y + r * geo.w * static_cast<int64_t>(geo.c) + c;
  const int col0 = p.seg * kSeg;  // tile column of the window's left edge for output column 0
  float left[3][kV], mid[3][kV], right[3][kV];
  read_column<T>(rows, col0, left);
  read_column<T>(rows, col0 + 1, mid);
#pragma unroll
  for (int k = 0; k < kSeg; ++k) {
    read_column<T>(rows, col0 + k + 2, right);
    const int w = w0 + col0 + k;
    [[maybe_unused]] float pre[kV];
    if constexpr (kGeluGrad) read4<T>(s_aux + p.rr * kGPitch + (col0 + k) * kPixBytes + p.tx * kV * sizeof(T), pre);
    float o[kV];
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      float acc = window_sum(wt, left, mid, right, j, b[j]);
      if constexpr (MODE == 1 || MODE == 3) acc += mid[1][j];
      if constexpr (MODE == 2) acc *= sigmoid_fast(acc);
      if constexpr (kGeluGrad) acc *= gelu_grad(pre[j]);
      o[j] = acc;
    }
    if (w < geo.w) store4(out + static_cast<int64_t>(w) * geo.c, o);
    slide(left, mid, right);
  }
}

// Pass 1 of the backward: per-block partial sums of g * x_tap (9 taps) and g over the tiles the block
// visits, part[block.x][group][c], group 0-8 a tap, 9 the bias. MODE 2 (SiLU): g = grad_y * silu'(z),
// rounded to T and written to g_out; MODE 3: the taps read gelu(x) (the x tile turned into it).
template <typename T, typename W, int MODE, int CH>
__global__ void __launch_bounds__(TileShape<T>::kThreads, TileShape<T>::kMinBlocks)
    dwconv_wgrad_kernel(const T* __restrict__ grad_y, const T* __restrict__ x, const W* __restrict__ weight,
                        const W* __restrict__ bias, T* __restrict__ g_out, float* __restrict__ part, Geometry geo) {
  using S = TileShape<T>;
  __shared__ __align__(16) char s_x[S::kXBytes];
  __shared__ __align__(16) char s_g[S::kGBytes];
  __shared__ __align__(16) float s_w[MODE == 2 ? 9 * S::kCT : 4];
  __shared__ __align__(16) float s_b[MODE == 2 ? S::kCT : 4];
  const int c0 = blockIdx.y * S::kCT;
  const Place<T> p;
  const int c = c0 + p.tx * kV;
  const bool channels_ok = c < geo.c;
  zero_bytes<S::kThreads>(s_x + S::kInRows * kRowPitch, kRowPitch);
  if constexpr (MODE == 2) stage_weights<W, false, S::kCT, S::kThreads>(weight, bias, c0, min(S::kCT, geo.c - c0), s_w, s_b);
  float gw[9][kV], gb[kV];
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    gb[j] = 0.f;
#pragma unroll
    for (int t = 0; t < 9; ++t) gw[t][j] = 0.f;
  }
  const int g_off = p.tx * kV * static_cast<int>(sizeof(T));
  for (int64_t tile = blockIdx.x; tile < geo.tiles; tile += gridDim.x) {
    const int64_t r0 = tile / geo.col_tiles * kTH;
    const int w0 = static_cast<int>(tile % geo.col_tiles) * kTW;
    __syncthreads();  // the previous tile is no longer read
    start_tile_copy<T, CH, S::kInRows, kInCols, S::kThreads>(s_x, kRowPitch, x, geo, r0 - 1, w0 - 1, c0);
    start_tile_copy<T, CH, kTH, kTW, S::kThreads>(s_g, kGPitch, grad_y, geo, r0, w0, c0);
    copy_async_wait_all();
    __syncthreads();
    if constexpr (MODE == 3) {
      gelu_tile<T, S::kInRows, S::kThreads>(s_x);
      __syncthreads();
    }
    const int64_t r = r0 + p.rr;
    if (r >= geo.nh || !channels_ok) continue;
    const char* rows[3];
    window_rows<T>(s_x, p.rr, r, p.tx, geo.h, rows);
    const char* g_row = s_g + p.rr * kGPitch + g_off;
    [[maybe_unused]] T* g_dst = MODE == 2 ? g_out + r * geo.w * static_cast<int64_t>(geo.c) + c : nullptr;
    const int col0 = p.seg * kSeg;
    float left[3][kV], mid[3][kV], right[3][kV];
    read_column<T>(rows, col0, left);
    read_column<T>(rows, col0 + 1, mid);
#pragma unroll
    for (int k = 0; k < kSeg; ++k) {
      read_column<T>(rows, col0 + k + 2, right);
      const int w = w0 + col0 + k;
      if (w < geo.w) {
        float g[kV];
        read4<T>(g_row + (col0 + k) * kPixBytes, g);
        if constexpr (MODE == 2) {
          float z[kV];
          window_sums_shared<S::kCT>(s_w, s_b, p.tx, left, mid, right, z);
#pragma unroll
          for (int j = 0; j < kV; ++j) {
            const float s = sigmoid_fast(z[j]);
            g[j] = to_float(from_float<T>(g[j] * s * fmaf(z[j], 1.f - s, 1.f)));  // rounded as g_out holds it
          }
          store4(g_dst + static_cast<int64_t>(w) * geo.c, g);
        }
#pragma unroll
        for (int j = 0; j < kV; ++j) {
          gb[j] += g[j];
#pragma unroll
          for (int rw = 0; rw < 3; ++rw) {
            gw[3 * rw][j] = fmaf(g[j], left[rw][j], gw[3 * rw][j]);
            gw[3 * rw + 1][j] = fmaf(g[j], mid[rw][j], gw[3 * rw + 1][j]);
            gw[3 * rw + 2][j] = fmaf(g[j], right[rw][j], gw[3 * rw + 2][j]);
          }
        }
      }
      slide(left, mid, right);
    }
  }
  // The block's partial: the items' sums per channel vector, in a fixed order (deterministic). The
  // items of a warp are added by a butterfly of shuffles (the lanes of one channel vector are kCVT
  // apart), then one thread per (group, channel vector) adds the warps' sums in warp order. (One
  // thread per channel vector walking all 32 items, group after group, was ~10k cycles a block by
  // count; a B128 C128 8x32 weight gradient went from 15.7 to 12.3 us with this, perf note 43.)
  static_assert(32 % S::kCVT == 0 && S::kThreads % 32 == 0, "a warp holds whole items");
  constexpr int kWarps = S::kThreads / 32;
#pragma unroll
  for (int lane_step = S::kCVT; lane_step < 32; lane_step *= 2) {
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      gb[j] += __shfl_xor_sync(0xffffffffu, gb[j], lane_step);
#pragma unroll
      for (int t = 0; t < 9; ++t) gw[t][j] += __shfl_xor_sync(0xffffffffu, gw[t][j], lane_step);
    }
  }
  __syncthreads();  // the last tile is no longer read
  float4* s_red = reinterpret_cast<float4*>(s_x);  // [warp][group][channel vector]
  static_assert(kWarps * kGroups * S::kCVT * sizeof(float4) <= S::kXBytes, "the warp sums fit the x tile");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane < S::kCVT) {
#pragma unroll
    for (int grp = 0; grp < kGroups; ++grp) {
      const float* src = grp < 9 ? gw[grp < 9 ? grp : 0] : gb;
      s_red[(warp * kGroups + grp) * S::kCVT + lane] = make_float4(src[0], src[1], src[2], src[3]);
    }
  }
  __syncthreads();
  if (threadIdx.x < kGroups * S::kCVT) {
    const int grp = threadIdx.x / S::kCVT, vec = threadIdx.x % S::kCVT;
    const int cv = c0 + vec * kV;
    float4 total = s_red[grp * S::kCVT + vec];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      const float4 q = s_red[(w * kGroups + grp) * S::kCVT + vec];
      total.x += q.x; total.y += q.y; total.z += q.z; total.w += q.w;
    }
    if (cv < geo.c)
      *reinterpret_cast<float4*>(part + static_cast<int64_t>(blockIdx.x) * kGroups * geo.c +
                                 static_cast<int64_t>(grp) * geo.c + cv) = total;
  }
}

// grad_weight (C, 9) and grad_bias (C): each output is the sum over the n_part block partials
// (finalize_column: a fixed pattern, deterministic).
template <typename W>
__global__ void __launch_bounds__(kFinalizeThreads)
    dwconv_finalize_kernel(const float* __restrict__ part, W* __restrict__ grad_weight, W* __restrict__ grad_bias,
                           int n_part, int C) {
  int64_t o;
  float total;
  if (!finalize_column(part, n_part, static_cast<int64_t>(kGroups) * C, o, total)) return;
  const int grp = static_cast<int>(o / C), c = static_cast<int>(o % C);
  if (grp < 9) {
    grad_weight[static_cast<int64_t>(c) * 9 + grp] = from_float<W>(total);
  } else {
    grad_bias[c] = from_float<W>(total);
  }
}

template <typename T>
int channel_tiles(int c) {
  return (c + TileShape<T>::kCT - 1) / TileShape<T>::kCT;
}

// Weight-gradient blocks an SM (2 resident): 2 won 3% on B128 C128 8x32 and lost 7-10% on the
// 512-1024-channel maps, where more blocks hide each other's tile loads (perf note 43).
#ifndef OPENREC_DW_WGRAD_BLOCKS_PER_SM
#define OPENREC_DW_WGRAD_BLOCKS_PER_SM 4
#endif

// Blocks along the tiles for the weight gradient: about 4 per SM in all, each over >= 1 tile.
template <typename T>
int wgrad_blocks_x(const Geometry& g) {
  const int64_t all_blocks = int64_t{OPENREC_DW_WGRAD_BLOCKS_PER_SM} * num_sms();
  int64_t target = (all_blocks + channel_tiles<T>(g.c) - 1) / channel_tiles<T>(g.c);
  if (target < 1) target = 1;
  const int64_t blocks = g.tiles < target ? g.tiles : target;
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

bool shape_ok(int64_t n, int h, int w, int c) { return n > 0 && h > 0 && w > 0 && c > 0 && c % kV == 0; }

// 16-byte chunks where every pixel's channels and every pointer read through tiles are 16-byte
// aligned; else 8-byte (the binding guarantees 4-element alignment). fp32 rows of C % 4 == 0 are
// always 16-byte multiples.
template <typename T>
bool chunks16(int c, std::initializer_list<const void*> ptrs) {
  if ((static_cast<int64_t>(c) * sizeof(T)) % 16 != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <typename T, typename W, int MODE, bool FLIP>
cudaError_t launch_conv(const T* x, const W* weight, const W* bias, const T* aux, T* y, const Geometry& geo,
                        bool vec16, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(geo.tiles), channel_tiles<T>(geo.c));
  constexpr int kThreads = TileShape<T>::kThreads;
  if (sizeof(T) == 4 || vec16) {
    dwconv_kernel<T, W, MODE, FLIP, 16><<<grid, kThreads, 0, stream>>>(x, weight, bias, aux, y, geo);
  } else if constexpr (sizeof(T) < 4) {
    dwconv_kernel<T, W, MODE, FLIP, 8><<<grid, kThreads, 0, stream>>>(x, weight, bias, aux, y, geo);
  }
  return cudaGetLastError();
}

template <typename T, typename W, int MODE>
cudaError_t launch_wgrad(const T* gy, const T* x, const W* weight, const W* bias, T* g, float* part,
                         const Geometry& geo, int n_part, bool vec16, cudaStream_t stream) {
  const dim3 grid(n_part, channel_tiles<T>(geo.c));
  constexpr int kThreads = TileShape<T>::kThreads;
  if (sizeof(T) == 4 || vec16) {
    dwconv_wgrad_kernel<T, W, MODE, 16><<<grid, kThreads, 0, stream>>>(gy, x, weight, bias, g, part, geo);
  } else if constexpr (sizeof(T) < 4) {
    dwconv_wgrad_kernel<T, W, MODE, 8><<<grid, kThreads, 0, stream>>>(gy, x, weight, bias, g, part, geo);
  }
  return cudaGetLastError();
}

template <typename T, typename W>
cudaError_t forward_typed(int mode, const void* x, const void* weight, const void* bias, void* y, int64_t n, int h,
                          int w, int c, cudaStream_t stream) {
  const Geometry geo = geometry<T>(n, h, w, c);
  const T* xp = static_cast<const T*>(x);
  const W* wp = static_cast<const W*>(weight);
  const W* bp = static_cast<const W*>(bias);
  T* yp = static_cast<T*>(y);
  const bool vec16 = chunks16<T>(c, {x});
  switch (mode) {
    case 0: return launch_conv<T, W, 0, false>(xp, wp, bp, nullptr, yp, geo, vec16, stream);
    case 1: return launch_conv<T, W, 1, false>(xp, wp, bp, nullptr, yp, geo, vec16, stream);
    case 2: return launch_conv<T, W, 2, false>(xp, wp, bp, nullptr, yp, geo, vec16, stream);
    case 3: return launch_conv<T, W, 3, false>(xp, wp, bp, nullptr, yp, geo, vec16, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T, typename W>
cudaError_t backward_typed(int mode, const void* grad_y, const void* x, const void* weight, const void* bias,
                           void* grad_x, void* grad_weight, void* grad_bias, void* g_buffer, float* workspace,
                           int64_t n, int h, int w, int c, cudaStream_t stream) {
  const Geometry geo = geometry<T>(n, h, w, c);
  const int n_part = wgrad_blocks_x<T>(geo);
  const T* gy = static_cast<const T*>(grad_y);
  const T* xp = static_cast<const T*>(x);
  const W* wp = static_cast<const W*>(weight);
  const W* bp = static_cast<const W*>(bias);
  T* g = static_cast<T*>(g_buffer);
  const bool vec16 = chunks16<T>(c, {grad_y, x, g_buffer});
  cudaError_t err;
  switch (mode) {
    case 2: err = launch_wgrad<T, W, 2>(gy, xp, wp, bp, g, workspace, geo, n_part, vec16, stream); break;
    case 3: err = launch_wgrad<T, W, 3>(gy, xp, wp, bp, nullptr, workspace, geo, n_part, vec16, stream); break;
    default: err = launch_wgrad<T, W, 0>(gy, xp, wp, bp, nullptr, workspace, geo, n_part, vec16, stream); break;
  }
  if (err != cudaSuccess) return err;
  dwconv_finalize_kernel<W><<<finalize_blocks(static_cast<int64_t>(kGroups) * c), kFinalizeThreads, 0, stream>>>(
      workspace, static_cast<W*>(grad_weight), static_cast<W*>(grad_bias), n_part, c);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  T* gx = static_cast<T*>(grad_x);
  switch (mode) {
    case 1: return launch_conv<T, W, 1, true>(gy, wp, nullptr, nullptr, gx, geo, vec16, stream);  // grad_y + conv^T
    case 2: return launch_conv<T, W, 0, true>(g, wp, nullptr, nullptr, gx, geo, vec16, stream);
    case 3: return launch_conv<T, W, 3, true>(gy, wp, nullptr, xp, gx, geo, vec16, stream);  // (...) * gelu'(x)
    default: return launch_conv<T, W, 0, true>(gy, wp, nullptr, nullptr, gx, geo, vec16, stream);
  }
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

template <typename T>
int64_t workspace_floats(int64_t n, int h, int w, int c) {
  return static_cast<int64_t>(wgrad_blocks_x<T>(geometry<T>(n, h, w, c))) * kGroups * c;
}

}  // namespace

// The partials depend on the tile height, which depends on the element size: size for the largest
// count (the 16-bit tiles are the shorter ones, so they need at least as many blocks).
int64_t dwconv3x3_backward_workspace_floats(int64_t n, int h, int w, int c) {
  if (!shape_ok(n, h, w, c)) return 1;
  const int64_t a = workspace_floats<float>(n, h, w, c), b = workspace_floats<__half>(n, h, w, c);
  return a > b ? a : b;
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

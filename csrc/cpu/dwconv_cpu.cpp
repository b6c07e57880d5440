// CPU implementation of openrec::dwconv3x3 (the forward of the fused depthwise 3x3 convolution; the
// schema, fake implementation, autograd and the PyTorch formulation are in openrec/ops/dwconv.py).
// Why a loop: at batch 1 a DA-Mamba block runs four depthwise 3x3 convolutions, and oneDNN spends
// more time per call on setting up than on the 9 multiply-adds per value; the bias and the epilogue
// (residual add, SiLU) were further passes over the map. Here one pass reads the input and writes
// the output once.
//
// Layout: channels-last (N, H, W, C) in memory, so the inner loops run over contiguous channels.
// A task is a run of output rows, all channels (tasks of 64 channels were tried: the per-pixel tap
// set-up then outweighed four vectors of work). Each output value is bias + the nine taps in
// row-major order; taps outside the map are skipped (zero padding). Math in fp32 (float64 for
// float64 x), like the formulation; the summation order differs from oneDNN's, so results agree to
// rounding, not bit for bit. No reductions: the loops give the same bits at any thread count. GELU
// (mode 3) and SiLU (mode 2) are ATen's, as in the formulation (a fused polynomial GELU, row by row
// into a three-row buffer, was tried: it ran about twice as slow per value as ATen's).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu_common.h"

// Fused multiply-adds in these loops (the extension is built with -ffp-contract=off for DAS's exact
// rounding; here the order already differs from oneDNN's, and the FMA halves the arithmetic).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

namespace {

using at::Tensor;

enum Epilogue : int64_t { kNone = 0, kResidual = 1, kSilu = 2, kGeluResidual = 3 };

using openrec_cpu::load;
using openrec_cpu::Vec;

// Channels [c, c + lanes of V) of one output row, sliding along the row: the nine weights stay in
// registers and each input vector is loaded once for the three outputs that use it. Each output is
// bias + the nine taps in row-major order (zeros where a tap falls in the padding, as conv2d's zero
// padding), then the residual (the centre input). V is a 64-byte vector or a single T (the tail).
template <typename T, typename V>
OPENREC_INLINE void conv_row_lanes(const T* const* rows, const T* taps, const T* bias, T* out, int64_t width,
                                   int64_t channels, int64_t c, bool residual) {
  V weight[3][3], window[3][3], b;
  const V zero = {};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) load(weight[i][j], taps + (i * 3 + j) * channels + c);
  load(b, bias + c);
  for (int i = 0; i < 3; ++i) {
    window[i][0] = window[i][1] = window[i][2] = zero;  // (left, centre, right) of pixel 0
    if (rows[i] == nullptr) continue;
    load(window[i][1], rows[i] + c);
    if (width > 1) load(window[i][2], rows[i] + channels + c);
  }
  for (int64_t w = 0; w < width; ++w) {
    V acc = b;
    for (int i = 0; i < 3; ++i) {
      if (rows[i] == nullptr) continue;  // a row outside the map adds nothing
      acc += weight[i][0] * window[i][0];
      acc += weight[i][1] * window[i][1];
      acc += weight[i][2] * window[i][2];
    }
    if (residual) acc = window[1][1] + acc;
    std::memcpy(out + w * channels + c, &acc, sizeof(V));
    for (int i = 0; i < 3; ++i) {
      window[i][0] = window[i][1];
      window[i][1] = window[i][2];
      window[i][2] = zero;
      if (rows[i] != nullptr && w + 2 < width) load(window[i][2], rows[i] + (w + 2) * channels + c);
    }
  }
}

// One output row, all channels, from its three input rows (above, centre, below; null outside the
// map); taps holds the nine weight rows (9, C).
template <typename T>
OPENREC_CPU_CLONES void conv_row(const T* const* rows, const T* taps, const T* bias, T* out, int64_t width,
                                 int64_t channels, bool residual) {
  int64_t c = 0;
#if defined(__GNUC__)
  using V = typename Vec<T>::type;
  for (; c + int64_t(sizeof(V) / sizeof(T)) <= channels; c += sizeof(V) / sizeof(T))
    conv_row_lanes<T, V>(rows, taps, bias, out, width, channels, c, residual);
#endif
  for (; c < channels; ++c) conv_row_lanes<T, T>(rows, taps, bias, out, width, channels, c, residual);
}

Tensor dwconv3x3_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t mode) {
  openrec_cpu::check_cpu({&x, &weight, &bias}, "dwconv3x3");
  TORCH_CHECK_VALUE(x.dim() == 4 && weight.dim() == 4 && weight.size(0) == x.size(1) && weight.size(1) == 1 &&
                        weight.size(2) == 3 && weight.size(3) == 3 && bias.dim() == 1 && bias.size(0) == x.size(1),
                    "openrec::dwconv3x3: x must be (N, C, H, W) with weight (C, 1, 3, 3) and bias (C,), got ",
                    x.sizes(), ", ", weight.sizes(), " and ", bias.sizes());
  TORCH_CHECK_VALUE(mode >= kNone && mode <= kGeluResidual,
                    "openrec::dwconv3x3: mode must be 0 (none), 1 (residual), 2 (silu) or 3 (gelu_residual), got ",
                    mode);
  const auto cd = openrec_cpu::compute_type({&x});  // fp32, or float64 for float64 x
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  // gelu_residual convolves gelu(x) as the unfused path stores it: ATen's GELU, rounded to x's dtype.
  Tensor input = mode == kGeluResidual ? at::gelu(x.to(cd)).to(x.scalar_type()).to(cd) : x.to(cd);
  input = input.contiguous(at::MemoryFormat::ChannelsLast);
  const Tensor taps = weight.to(cd).reshape({channels, 9}).t().contiguous();  // (9, C): a row per tap
  const Tensor bias_c = bias.to(cd).contiguous();
  Tensor out = at::empty({batch, channels, height, width}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out.to(x.scalar_type());
  const bool residual = mode == kResidual || mode == kGeluResidual;
  const int64_t row_size = width * channels;
  // Rows of about 16k values per task: enough work to pay for a thread at batch 1 (4 x 32 x 128).
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_size));
  AT_DISPATCH_FLOATING_TYPES(cd, "dwconv3x3_cpu", [&] {
    const scalar_t* xp = input.data_ptr<scalar_t>();
    const scalar_t* tp = taps.data_ptr<scalar_t>();
    const scalar_t* bp = bias_c.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch * height, grain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t h = row % height;
        const scalar_t* rows[3];
        for (int64_t i = 0; i < 3; ++i) {
          const int64_t hi = h + i - 1;
          rows[i] = hi < 0 || hi >= height ? nullptr : xp + (row + i - 1) * row_size;
        }
        conv_row<scalar_t>(rows, tp, bp, op + row * row_size, width, channels, residual);
      }
    });
  });
  if (mode == kSilu) at::silu_(out);  // ATen's vectorised SiLU, as the formulation applies it
  return out.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(openrec, CPU, m) {
  m.impl("dwconv3x3", &dwconv3x3_cpu);
}

// CPU implementations of the DAS and selective-scan ops declared in openrec/ops/ (torch.library
// custom ops), registered for the CPU dispatch key. Python owns the schemas, fake implementations
// and autograd; openrec/ops/das.py and selective_scan.py hold the PyTorch formulations these loops
// must match (tests/ops/test_cpu_kernels.py compares them). Why loops: the PyTorch formulations are
// tens of small tensor ops (a log2(L)-step doubling scan, four gathers per DAS sample), bound by
// per-op overhead at batch 1 and by memory traffic at larger batches; here each op is one pass.
//
// Math is in fp32 (float64 when any tensor is float64), like the PyTorch formulations. Every
// reduction runs in a fixed order (per batch element, then over the batch), so results do not
// depend on the thread count. Built with -ffp-contract=off: DAS's bilinear sum then rounds exactly
// like the PyTorch formulation.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "cpu_common.h"
#include "scan_fused_cpu.h"

namespace {

using at::Tensor;

constexpr int64_t kScanChunk = 8;       // == SCAN_CHUNK in openrec/ops/selective_scan.py
constexpr double kSoftplusThreshold = 20.0;  // F.softplus's default threshold

using openrec_cpu::as_compute;
using openrec_cpu::check_cpu;
using openrec_cpu::compute_type;

// ------------------------------------------------------------------------------------------ scan
struct ScanDims {
  int64_t batch, length, dim;
};

ScanDims scan_dims(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                   const Tensor& D, const Tensor& bias, const char* op) {
  TORCH_CHECK_VALUE(u.dim() == 3 && u.sizes() == delta.sizes(), "openrec::", op,
              ": u and delta must both be (batch, L, D), got ", u.sizes(), " and ", delta.sizes());
  const int64_t batch = u.size(0), length = u.size(1), dim = u.size(2);
  TORCH_CHECK_VALUE(A.dim() == 1 && A.size(0) == dim && D.dim() == 1 && D.size(0) == dim && bias.dim() == 1 &&
                  bias.size(0) == dim, "openrec::", op, ": A, D and delta_bias must have shape (", dim, ",)");
  TORCH_CHECK_VALUE(B.dim() == 2 && B.size(0) == batch && B.size(1) == length && C.sizes() == B.sizes(), "openrec::", op,
              ": B and C must be (batch, L) = (", batch, ", ", length, ")");
  check_cpu({&u, &delta, &A, &B, &C, &D, &bias}, op);
  return {batch, length, dim};
}

// The pointwise terms of the recurrence, with ATen's own (vectorised) kernels in the PyTorch
// formulation's expressions, so softplus and exp round exactly as there: z = delta + bias,
// dt = softplus(z), decay = exp(dt * A), drive = dt * B * u. Only the scan itself is a loop here.
struct ScanTerms {
  Tensor z, dt, decay, drive;
};

ScanTerms scan_terms(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& bias,
                     bool delta_softplus) {
  ScanTerms t;
  t.z = delta + bias;
  t.dt = delta_softplus ? at::softplus(t.z) : t.z;
  t.decay = at::exp(t.dt * A);
  t.drive = (t.dt * B.unsqueeze(-1) * u).contiguous();
  t.decay = t.decay.contiguous();
  return t;
}

// h_t = decay_t h_{t-1} + drive_t along t for channels [d0, d1) of sequence b; y = h C + D u.
template <typename T>
void scan_forward_rows(const T* decay, const T* drive, const T* u, const T* C, const T* D, T* y, T* states,
                       const ScanDims& s, int64_t b, int64_t d0, int64_t d1) {
  const int64_t n_states = (s.length + kScanChunk - 1) / kScanChunk;
  std::vector<T> h(d1 - d0, T(0));
  T* hp = h.data() - d0;
  for (int64_t t = 0; t < s.length; ++t) {
    const int64_t row = (b * s.length + t) * s.dim;
    if (t % kScanChunk == 0) std::copy(h.begin(), h.end(), states + (b * n_states + t / kScanChunk) * s.dim + d0);
    const T ct = C[b * s.length + t];
    for (int64_t d = d0; d < d1; ++d) {
      hp[d] = decay[row + d] * hp[d] + drive[row + d];
      y[row + d] = hp[d] * ct + D[d] * u[row + d];
    }
  }
}

// fp32: one pass per 16 channels of a sequence (scan_fused_cpu.h), no ATen temporaries.
std::tuple<Tensor, Tensor> selective_scan_fused_f32(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                    const Tensor& B, const Tensor& C, const Tensor& D,
                                                    const Tensor& delta_bias, bool delta_softplus, const ScanDims& s) {
  namespace sf = openrec_cpu::scan_fused;
  const Tensor uc = as_compute(u, at::kFloat), dc = as_compute(delta, at::kFloat), Ac = as_compute(A, at::kFloat),
               Bc = as_compute(B, at::kFloat), Cc = as_compute(C, at::kFloat), Dc = as_compute(D, at::kFloat),
               bc = as_compute(delta_bias, at::kFloat);
  const int64_t n_states = (s.length + kScanChunk - 1) / kScanChunk;
  Tensor y = at::empty({s.batch, s.length, s.dim}, uc.options());
  Tensor states = at::empty({s.batch, n_states, s.dim}, uc.options());
  const int64_t blocks = (s.dim + sf::kLanes - 1) / sf::kLanes;
  at::parallel_for(0, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / blocks, d = (i % blocks) * sf::kLanes;
      const int64_t seq = b * s.length * s.dim + d;
      sf::RowArgs args{uc.data_ptr<float>() + seq, dc.data_ptr<float>() + seq, Ac.data_ptr<float>() + d,
                       Bc.data_ptr<float>() + b * s.length, Cc.data_ptr<float>() + b * s.length,
                       Dc.data_ptr<float>() + d, bc.data_ptr<float>() + d, y.data_ptr<float>() + seq,
                       states.data_ptr<float>() + b * n_states * s.dim + d, s.length, s.dim, kScanChunk,
                       static_cast<int>(std::min<int64_t>(sf::kLanes, s.dim - d)), delta_softplus,
                       static_cast<float>(kSoftplusThreshold)};
      sf::scan_forward_lanes(args);
    }
  });
  return {y.to(u.scalar_type()), states};
}

std::tuple<Tensor, Tensor> selective_scan_cpu(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                              const Tensor& C, const Tensor& D, const Tensor& delta_bias,
                                              bool delta_softplus) {
  const auto s = scan_dims(u, delta, A, B, C, D, delta_bias, "selective_scan");
  const auto cd = compute_type({&u, &delta, &A, &B, &C, &D, &delta_bias});
  if (cd == at::kFloat) return selective_scan_fused_f32(u, delta, A, B, C, D, delta_bias, delta_softplus, s);
  const auto state_type = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t n_states = (s.length + kScanChunk - 1) / kScanChunk;
  const Tensor uc = as_compute(u, cd), Cc = as_compute(C, cd), Dc = as_compute(D, cd);
  const ScanTerms terms = scan_terms(uc, delta.to(cd), A.to(cd), B.to(cd), delta_bias.to(cd), delta_softplus);
  Tensor y = at::empty({s.batch, s.length, s.dim}, uc.options());
  Tensor states = at::empty({s.batch, n_states, s.dim}, uc.options());
  // Channels in blocks, so one short sequence still spreads over the threads; no cross-block state.
  const int64_t block = std::min<int64_t>(s.dim, 32);
  const int64_t blocks = s.dim == 0 ? 0 : (s.dim + block - 1) / block;
  AT_DISPATCH_FLOATING_TYPES(cd, "selective_scan_cpu", [&] {
    at::parallel_for(0, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / blocks, d0 = (i % blocks) * block;
        scan_forward_rows<scalar_t>(terms.decay.data_ptr<scalar_t>(), terms.drive.data_ptr<scalar_t>(),
                                    uc.data_ptr<scalar_t>(), Cc.data_ptr<scalar_t>(), Dc.data_ptr<scalar_t>(),
                                    y.data_ptr<scalar_t>(), states.data_ptr<scalar_t>(), s, b, d0,
                                    std::min(s.dim, d0 + block));
      }
    });
  });
  return {y.to(u.scalar_type()), states.to(state_type)};
}

// The adjoint of sequence b: a forward pass recomputes h_{t-1}, then a reverse pass runs
// lambda_t = dy_t C_t + decay_{t+1} lambda_{t+1} and the gradients of the PyTorch formulation
// (selective_scan_backward_torch). Per-channel sums go to this sequence's row of the partial-sum
// buffers (dA, dD, dbias), summed over sequences afterwards in order.
template <typename T>
void scan_backward_sequence(const T* gy, const T* u, const T* z, const T* dt, const T* decay, const T* drive,
                            const T* e, const T* A, const T* B, const T* C, const T* D, T* h_prev, T* du, T* dz_out,
                            T* dB, T* dC, T* dA_part, T* dD_part, T* dbias_part, const ScanDims& s, int64_t b) {
  const int64_t L = s.length, dim = s.dim;
  std::vector<T> lam(dim, T(0)), decay_next(dim, T(0)), h(dim, T(0));
  for (int64_t t = 0; t < L; ++t) {
    const int64_t row = (b * L + t) * dim;
    for (int64_t d = 0; d < dim; ++d) {
      h_prev[row + d] = h[d];
      h[d] = decay[row + d] * h[d] + drive[row + d];
    }
  }
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t row = (b * L + t) * dim;
    const T bt = B[b * L + t], ct = C[b * L + t];
    T sum_b = 0, sum_c = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const int64_t i = row + d;
      const T hp = h_prev[i];
      const T ht = decay[i] * hp + drive[i];
      const T g = gy[i];
      const T l = g * ct + decay_next[d] * lam[d];
      lam[d] = l;
      decay_next[d] = decay[i];
      sum_c += g * ht;
      dD_part[d] += g * u[i];
      const T lam_dt = l * dt[i];
      du[i] = lam_dt * bt + g * D[d];
      sum_b += lam_dt * u[i];
      const T lam_h_decay = l * hp * decay[i];
      const T d_dt = l * bt * u[i] + lam_h_decay * A[d];
      dA_part[d] += lam_h_decay * dt[i];
      // softplus' as PyTorch's softplus_backward: e / (e + 1) with e = exp(z), linear above the threshold.
      const T dz = (e == nullptr || z[i] > T(kSoftplusThreshold)) ? d_dt : d_dt * e[i] / (e[i] + T(1));
      dz_out[i] = dz;
      dbias_part[d] += dz;
    }
    dB[b * L + t] = sum_b;
    dC[b * L + t] = sum_c;
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_backward_cpu(
    const Tensor& grad_y, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
    const Tensor& D, const Tensor& delta_bias, const Tensor& states, bool delta_softplus) {
  (void)states;  // the CPU backward recomputes h in one forward pass; chunk states serve the CUDA kernel
  const auto s = scan_dims(u, delta, A, B, C, D, delta_bias, "selective_scan_backward");
  TORCH_CHECK_VALUE(grad_y.sizes() == u.sizes(), "openrec::selective_scan_backward: grad_y must match u");
  check_cpu({&grad_y}, "selective_scan_backward");
  const auto cd = compute_type({&grad_y, &u, &delta, &A, &B, &C, &D, &delta_bias});
  const Tensor gy = as_compute(grad_y, cd), uc = as_compute(u, cd), Ac = as_compute(A, cd), Bc = as_compute(B, cd),
               Cc = as_compute(C, cd), Dc = as_compute(D, cd);
  const ScanTerms terms = scan_terms(uc, delta.to(cd), Ac, Bc, delta_bias.to(cd), delta_softplus);
  const Tensor z = terms.z.contiguous(), dt = terms.dt.contiguous();
  const Tensor e = delta_softplus ? at::exp(z.clamp_max(kSoftplusThreshold)).contiguous() : Tensor();
  const auto opts = uc.options();
  Tensor du = at::empty({s.batch, s.length, s.dim}, opts), dz = at::empty({s.batch, s.length, s.dim}, opts);
  Tensor h_prev = at::empty({s.batch, s.length, s.dim}, opts);
  Tensor dB = at::empty({s.batch, s.length}, opts), dC = at::empty({s.batch, s.length}, opts);
  Tensor parts = at::zeros({3, s.batch, s.dim}, opts);  // dA, dD, dbias per sequence (zeroed: accumulated)
  AT_DISPATCH_FLOATING_TYPES(cd, "selective_scan_backward_cpu", [&] {
    scalar_t* p = parts.data_ptr<scalar_t>();
    const scalar_t* ep = delta_softplus ? e.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, s.batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        scan_backward_sequence<scalar_t>(
            gy.data_ptr<scalar_t>(), uc.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
            terms.decay.data_ptr<scalar_t>(), terms.drive.data_ptr<scalar_t>(), ep, Ac.data_ptr<scalar_t>(),
            Bc.data_ptr<scalar_t>(), Cc.data_ptr<scalar_t>(), Dc.data_ptr<scalar_t>(), h_prev.data_ptr<scalar_t>(),
            du.data_ptr<scalar_t>(), dz.data_ptr<scalar_t>(), dB.data_ptr<scalar_t>(), dC.data_ptr<scalar_t>(),
            p + b * s.dim, p + (s.batch + b) * s.dim, p + (2 * s.batch + b) * s.dim, s, b);
      }
    });
  });
  // Sums over the batch in sequence order: deterministic for any thread count. Three separate
  // tensors: outputs of an op must not alias one another.
  Tensor dA = at::zeros({s.dim}, opts), dD = at::zeros({s.dim}, opts), dbias = at::zeros({s.dim}, opts);
  AT_DISPATCH_FLOATING_TYPES(cd, "selective_scan_backward_cpu_sums", [&] {
    const scalar_t* p = parts.data_ptr<scalar_t>();
    scalar_t* out[3] = {dA.data_ptr<scalar_t>(), dD.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>()};
    for (int64_t k = 0; k < 3; ++k)
      for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t d = 0; d < s.dim; ++d) out[k][d] += p[(k * s.batch + b) * s.dim + d];
  });
  return {du.to(u.scalar_type()), dz.to(delta.scalar_type()), dA.to(A.scalar_type()), dB.to(B.scalar_type()),
          dC.to(C.scalar_type()), dD.to(D.scalar_type()), dbias.to(delta_bias.scalar_type())};
}

// ------------------------------------------------------------------------------------------- DAS
struct DasDims {
  int64_t n, h, w, groups, cg;
};

DasDims das_dims(const Tensor& x, const Tensor& offset, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4 && offset.dim() == 4, "openrec::", op, ": x must be (N,H,W,C) and offset (N,H,W,2G); got ",
              x.sizes(), " and ", offset.sizes());
  TORCH_CHECK_VALUE(x.size(0) == offset.size(0) && x.size(1) == offset.size(1) && x.size(2) == offset.size(2), "openrec::", op,
              ": x ", x.sizes(), " and offset ", offset.sizes(), " differ in (N,H,W)");
  TORCH_CHECK_VALUE(offset.size(3) % 2 == 0, "openrec::", op, ": offset's last dim must be 2*groups, got ", offset.size(3));
  const int64_t groups = offset.size(3) / 2;
  TORCH_CHECK_VALUE(groups > 0 && x.size(3) % groups == 0, "openrec::", op, ": channels ", x.size(3),
              " not divisible by groups ", groups);
  check_cpu({&x, &offset}, op);
  return {x.size(0), x.size(1), x.size(2), groups, x.size(3) / groups};
}

// The four bilinear corners of one sample point, in the PyTorch formulation's order and arithmetic.
template <typename T>
struct Corners {
  int64_t pixel[4];  // flat (n, h, w) index of each corner, -1 when outside
  T weight[4];
  T hh, hw, lh, lw;

  Corners(const DasDims& s, int64_t n, int64_t y, int64_t x, T dx, T dy) {
    const T loc_w = T(x) + dx, loc_h = T(y) + dy;
    const T w_low = std::floor(loc_w), h_low = std::floor(loc_h);
    lw = loc_w - w_low;
    lh = loc_h - h_low;
    hw = 1 - lw;
    hh = 1 - lh;
    weight[0] = hh * hw;
    weight[1] = hh * lw;
    weight[2] = lh * hw;
    weight[3] = lh * lw;
    const int64_t h0 = static_cast<int64_t>(h_low), w0 = static_cast<int64_t>(w_low);
    for (int k = 0; k < 4; ++k) {
      const int64_t hk = h0 + (k >> 1), wk = w0 + (k & 1);
      const bool inside = hk >= 0 && hk < s.h && wk >= 0 && wk < s.w;
      pixel[k] = inside ? (n * s.h + hk) * s.w + wk : -1;
    }
  }
};

// Offsets far outside the image would overflow the int64 corner index: such a sample reads zeros,
// like the PyTorch formulation, whose four corners are all outside then. NaN offsets give NaN.
template <typename T>
inline bool sample_is_far(T dx, T dy, const DasDims& s) {
  const T limit = T(4) * T(std::max(s.h, s.w)) + T(4);
  return std::abs(dx) >= limit || std::abs(dy) >= limit;
}

template <typename T>
inline bool is_nan_pair(T dx, T dy) { return std::isnan(dx) || std::isnan(dy); }

Tensor das_sample_cpu(const Tensor& x, const Tensor& offset) {
  const auto s = das_dims(x, offset, "das_sample");
  const auto cd = compute_type({&x, &offset});
  const Tensor xc = as_compute(x, cd), oc = as_compute(offset, cd);
  Tensor out = at::empty({s.n, s.h, s.w, s.groups * s.cg}, xc.options());
  const int64_t pixels = s.n * s.h * s.w, channels = s.groups * s.cg;
  AT_DISPATCH_FLOATING_TYPES(cd, "das_sample_cpu", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* op = oc.data_ptr<scalar_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, pixels, 16, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / (s.h * s.w), y = (p / s.w) % s.h, xw = p % s.w;
        for (int64_t g = 0; g < s.groups; ++g) {
          scalar_t* o = outp + p * channels + g * s.cg;
          const scalar_t dx = op[(p * s.groups + g) * 2], dy = op[(p * s.groups + g) * 2 + 1];
          if (is_nan_pair(dx, dy)) {
            std::fill(o, o + s.cg, std::numeric_limits<scalar_t>::quiet_NaN());
            continue;
          }
          std::fill(o, o + s.cg, scalar_t(0));
          if (sample_is_far(dx, dy, s)) continue;
          const Corners<scalar_t> c(s, n, y, xw, dx, dy);
          for (int k = 0; k < 4; ++k) {
            if (c.pixel[k] < 0) continue;  // the formulation adds weight * 0 here: the same sum
            const scalar_t* v = xp + c.pixel[k] * channels + g * s.cg;
            const scalar_t wk = c.weight[k];
            for (int64_t ch = 0; ch < s.cg; ++ch) o[ch] = o[ch] + wk * v[ch];
          }
        }
      }
    });
  });
  return out.to(x.scalar_type());
}

std::tuple<Tensor, Tensor> das_sample_backward_cpu(const Tensor& grad_out, const Tensor& x, const Tensor& offset,
                                                   bool deterministic) {
  (void)deterministic;  // always deterministic: each (image, group) is one task, accumulated in order
  const auto s = das_dims(x, offset, "das_sample_backward");
  TORCH_CHECK_VALUE(grad_out.sizes() == x.sizes(), "openrec::das_sample_backward: grad_out ", grad_out.sizes(),
              " must match x ", x.sizes());
  check_cpu({&grad_out}, "das_sample_backward");
  const auto cd = compute_type({&x, &offset, &grad_out});
  const Tensor xc = as_compute(x, cd), oc = as_compute(offset, cd), go = as_compute(grad_out, cd);
  Tensor grad_x = at::zeros({s.n, s.h, s.w, s.groups * s.cg}, xc.options());
  Tensor grad_off = at::empty({s.n, s.h, s.w, 2 * s.groups}, xc.options());
  const int64_t channels = s.groups * s.cg, hw = s.h * s.w;
  AT_DISPATCH_FLOATING_TYPES(cd, "das_sample_backward_cpu", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* op = oc.data_ptr<scalar_t>();
    const scalar_t* gp = go.data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    scalar_t* gof = grad_off.data_ptr<scalar_t>();
    // A sample of (image n, group g) only touches that image's channels of group g: disjoint tasks.
    at::parallel_for(0, s.n * s.groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / s.groups, g = task % s.groups;
        for (int64_t q = 0; q < hw; ++q) {
          const int64_t p = n * hw + q, y = q / s.w, xw = q % s.w;
          const scalar_t dx = op[(p * s.groups + g) * 2], dy = op[(p * s.groups + g) * 2 + 1];
          scalar_t* go_w = gof + (p * s.groups + g) * 2;
          if (is_nan_pair(dx, dy) || sample_is_far(dx, dy, s)) {
            go_w[0] = go_w[1] = is_nan_pair(dx, dy) ? std::numeric_limits<scalar_t>::quiet_NaN() : scalar_t(0);
            continue;
          }
          const Corners<scalar_t> c(s, n, y, xw, dx, dy);
          const scalar_t* gpix = gp + p * channels + g * s.cg;
          scalar_t dot[4] = {0, 0, 0, 0};
          for (int k = 0; k < 4; ++k) {
            if (c.pixel[k] < 0) continue;
            const scalar_t* v = xp + c.pixel[k] * channels + g * s.cg;
            scalar_t* gv = gx + c.pixel[k] * channels + g * s.cg;
            const scalar_t wk = c.weight[k];
            scalar_t acc = 0;
            for (int64_t ch = 0; ch < s.cg; ++ch) {
              gv[ch] += gpix[ch] * wk;
              acc += gpix[ch] * v[ch];
            }
            dot[k] = acc;
          }
          go_w[0] = c.hh * (dot[1] - dot[0]) + c.lh * (dot[3] - dot[2]);
          go_w[1] = c.hw * (dot[2] - dot[0]) + c.lw * (dot[3] - dot[1]);
        }
      }
    });
  });
  return {grad_x.to(x.scalar_type()), grad_off.to(offset.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(openrec, CPU, m) {
  m.impl("das_sample", &das_sample_cpu);
  m.impl("das_sample_backward", &das_sample_backward_cpu);
  m.impl("selective_scan", &selective_scan_cpu);
  m.impl("selective_scan_backward", &selective_scan_backward_cpu);
}

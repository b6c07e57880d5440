// Registers the CUDA kernels as the CUDA implementations of the ops declared in openrec/ops/
// (torch.library custom ops). Python owns the schemas, fake implementations and autograd; this file
// only checks arguments, allocates outputs and launches. Loaded with torch.ops.load_library.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>

#include "openrec_kernels.h"

namespace {

using at::Tensor;

openrec::DType kernel_dtype(const Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return openrec::DType::kFloat32;
    case at::kHalf: return openrec::DType::kFloat16;
    case at::kBFloat16: return openrec::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "openrec::", op, ": the CUDA kernel takes float32, float16 or bfloat16, got ", t.scalar_type(),
                  " (float64 runs on the CPU implementation)");
  }
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "openrec::", op, ": CUDA kernel failed: ", cudaGetErrorString(err));
}

Tensor as_float(const Tensor& t) { return t.to(at::kFloat).contiguous(); }

// ------------------------------------------------------------------------------------------- DAS
openrec::DasShape das_shape(const Tensor& x, const Tensor& offset, const char* op) {
  TORCH_CHECK(x.dim() == 4 && offset.dim() == 4, "openrec::", op, ": x must be (N,H,W,C) and offset (N,H,W,2G)");
  TORCH_CHECK(x.size(0) == offset.size(0) && x.size(1) == offset.size(1) && x.size(2) == offset.size(2), "openrec::", op,
              ": x ", x.sizes(), " and offset ", offset.sizes(), " differ in (N,H,W)");
  TORCH_CHECK(offset.size(3) % 2 == 0 && offset.size(3) > 0, "openrec::", op, ": offset's last dim must be 2*groups");
  const int64_t groups = offset.size(3) / 2;
  TORCH_CHECK(x.size(3) % groups == 0, "openrec::", op, ": channels ", x.size(3), " not divisible by groups ", groups);
  TORCH_CHECK(x.is_cuda() && offset.device() == x.device(), "openrec::", op, ": tensors must be on one CUDA device");
  return openrec::DasShape{x.size(0), x.size(1), x.size(2), groups, x.size(3) / groups,
                           x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

// Offsets are passed in their own dtype when it is fp32 or x's dtype (no cast kernel); any other
// dtype is cast to fp32 here.
bool offset_is_float(const Tensor& x, const Tensor& offset) {
  return offset.scalar_type() != x.scalar_type() || offset.scalar_type() == at::kFloat;
}

Tensor offset_operand(const Tensor& x, const Tensor& offset) {
  return offset_is_float(x, offset) ? as_float(offset) : offset.contiguous();
}

Tensor das_sample_cuda(const Tensor& x, const Tensor& offset) {
  auto s = das_shape(x, offset, "das_sample");
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const Tensor off = offset_operand(x, offset);
  check_launch(openrec::das_forward(kernel_dtype(x, "das_sample"), offset_is_float(x, offset), x.data_ptr(),
                                    off.data_ptr(), out.data_ptr(), s, c10::cuda::getCurrentCUDAStream()),
               "das_sample");
  return out;
}

// The atomic-free backward is deterministic but slower at every benchmarked shape (tools/bench_ops.py,
// H100: 0.27 vs 0.18 ms fwd+bwd at B256 C256 4x32 fp32), so it runs only when determinism is asked
// for. OPENREC_DAS_BACKWARD=atomic|owned overrides the choice for experiments.
bool use_owned_backward(bool deterministic) {
  if (deterministic || at::globalContext().deterministicAlgorithms()) return true;
  static const std::string mode = [] {
    const char* env = std::getenv("OPENREC_DAS_BACKWARD");
    return std::string(env ? env : "auto");
  }();
  if (mode == "atomic") return false;
  if (mode == "owned") return true;
  return false;
}

std::tuple<Tensor, Tensor> das_sample_backward_cuda(const Tensor& grad_out, const Tensor& x, const Tensor& offset,
                                                    bool deterministic) {
  auto s = das_shape(x, offset, "das_sample_backward");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "openrec::das_sample_backward: grad_out ", grad_out.sizes(),
              " must match x ", x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = kernel_dtype(x, "das_sample_backward");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool off_f32 = offset_is_float(x, offset);
  const Tensor off = offset_operand(x, offset);
  Tensor grad_offset = at::empty(off.sizes(), off.options().memory_format(at::MemoryFormat::Contiguous));
  if (x.numel() == 0) return {at::zeros_like(x, at::MemoryFormat::Contiguous), grad_offset.zero_().to(offset.scalar_type())};
  const Tensor go = grad_out.to(x.scalar_type()).contiguous();
  Tensor grad_x;
  if (use_owned_backward(deterministic)) {
    grad_x = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    check_launch(openrec::das_backward_offset(dtype, off_f32, go.data_ptr(), x.data_ptr(), off.data_ptr(),
                                              grad_offset.data_ptr(), nullptr, true, s, stream),
                 "das_sample_backward");
    int smem_limit = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, x.get_device()));
    TORCH_CHECK(s.h * s.w * 4 <= smem_limit, "openrec::das_sample_backward: deterministic mode needs H*W <= ",
                smem_limit / 4, " pixels per image, got ", s.h * s.w);
    check_launch(openrec::das_backward_x_owned(dtype, off_f32, go.data_ptr(), off.data_ptr(), grad_x.data_ptr(), s,
                                               smem_limit, stream),
                 "das_sample_backward");
  } else {
    int major = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, x.get_device()));
    const bool in_dtype = openrec::das_backward_accum_in_dtype(dtype, x.data_ptr(), go.data_ptr(), s, major);
    Tensor accum = at::zeros(x.sizes(), x.options().dtype(in_dtype ? x.scalar_type() : at::kFloat)
                                            .memory_format(at::MemoryFormat::Contiguous));
    check_launch(openrec::das_backward_offset(dtype, off_f32, go.data_ptr(), x.data_ptr(), off.data_ptr(),
                                              grad_offset.data_ptr(), accum.data_ptr(), !in_dtype, s, stream),
                 "das_sample_backward");
    grad_x = accum.to(x.scalar_type());  // no-op when accumulated in x's dtype
  }
  return {grad_x, grad_offset.to(offset.scalar_type())};
}

// ----------------------------------------------------------------------------------------- scan
openrec::ScanShape scan_shape(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                              const Tensor& D, const Tensor& bias, bool softplus, const char* op) {
  TORCH_CHECK(u.dim() == 3 && u.sizes() == delta.sizes(), "openrec::", op,
              ": u and delta must both be (batch, L, D), got ", u.sizes(), " and ", delta.sizes());
  const int64_t batch = u.size(0), length = u.size(1), dim = u.size(2);
  TORCH_CHECK(A.numel() == dim && D.numel() == dim && bias.numel() == dim, "openrec::", op,
              ": A, D and delta_bias must have D = ", dim, " elements");
  TORCH_CHECK(B.dim() == 2 && B.size(0) == batch && B.size(1) == length && C.sizes() == B.sizes(), "openrec::", op,
              ": B and C must be (batch, L) = (", batch, ", ", length, ")");
  TORCH_CHECK(u.is_cuda() && delta.device() == u.device() && B.device() == u.device() && C.device() == u.device() &&
                  A.device() == u.device() && D.device() == u.device() && bias.device() == u.device(),
              "openrec::", op, ": tensors must be on one CUDA device");
  TORCH_CHECK(batch <= 65535, "openrec::", op, ": the CUDA kernel takes at most 65535 sequences per call");
  return openrec::ScanShape{batch, length, dim, softplus, length, 1};
}

// B and C as the kernel reads them: in u's dtype when both have it (the bf16-autocast case: no cast
// kernels), otherwise as fp32; strided views (column slices of the x_proj output) are read in
// place when B and C share their strides. Sets `bc_float` and the strides in `s`.
std::tuple<Tensor, Tensor> bc_operands(const Tensor& u, const Tensor& B, const Tensor& C, bool& bc_float,
                                       openrec::ScanShape& s) {
  bc_float = !(B.scalar_type() == u.scalar_type() && C.scalar_type() == u.scalar_type());
  Tensor Bk = bc_float ? B.to(at::kFloat) : B, Ck = bc_float ? C.to(at::kFloat) : C;
  if (Bk.strides() != Ck.strides()) {
    Bk = Bk.contiguous();
    Ck = Ck.contiguous();
  }
  s.bc_stride_batch = Bk.stride(0);
  s.bc_stride_time = Bk.stride(1);
  return {Bk, Ck};
}

std::tuple<Tensor, Tensor> selective_scan_cuda(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                               const Tensor& C, const Tensor& D, const Tensor& delta_bias,
                                               bool delta_softplus) {
  auto s = scan_shape(u, delta, A, B, C, D, delta_bias, delta_softplus, "selective_scan");
  const c10::cuda::CUDAGuard guard(u.device());
  const auto dtype = kernel_dtype(u, "selective_scan");
  const Tensor uc = u.contiguous(), dc = delta.to(u.scalar_type()).contiguous();
  Tensor y = at::empty_like(uc);
  const int64_t n_states = (s.length + openrec::kScanChunk - 1) / openrec::kScanChunk;
  Tensor states = at::empty({s.batch, n_states, s.dim}, u.options().dtype(at::kFloat));
  if (uc.numel() == 0) return {y, states.zero_()};
  bool bc_f32 = false;
  const auto [Bc, Cc] = bc_operands(u, B, C, bc_f32, s);
  const Tensor Af = as_float(A), Df = as_float(D), bf = as_float(delta_bias);
  check_launch(openrec::scan_forward(dtype, bc_f32, uc.data_ptr(), dc.data_ptr(), Af.data_ptr<float>(), Bc.data_ptr(),
                                     Cc.data_ptr(), Df.data_ptr<float>(), bf.data_ptr<float>(), y.data_ptr(),
                                     states.data_ptr<float>(), s, c10::cuda::getCurrentCUDAStream()),
               "selective_scan");
  return {y, states};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_backward_cuda(
    const Tensor& grad_y, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
    const Tensor& D, const Tensor& delta_bias, const Tensor& states, bool delta_softplus) {
  auto s = scan_shape(u, delta, A, B, C, D, delta_bias, delta_softplus, "selective_scan_backward");
  TORCH_CHECK(grad_y.sizes() == u.sizes(), "openrec::selective_scan_backward: grad_y must match u");
  const int64_t n_states = (s.length + openrec::kScanChunk - 1) / openrec::kScanChunk;
  TORCH_CHECK(states.dim() == 3 && states.size(0) == s.batch && states.size(1) == n_states && states.size(2) == s.dim,
              "openrec::selective_scan_backward: states must be (batch, ceil(L/", openrec::kScanChunk, "), D)");
  const c10::cuda::CUDAGuard guard(u.device());
  const auto dtype = kernel_dtype(u, "selective_scan_backward");
  const Tensor uc = u.contiguous(), dc = delta.to(u.scalar_type()).contiguous();
  const Tensor gy = grad_y.to(u.scalar_type()).contiguous(), st = as_float(states);
  bool bc_f32 = false;
  const auto [Bc, Cc] = bc_operands(u, B, C, bc_f32, s);
  const Tensor Af = as_float(A), Df = as_float(D), bf = as_float(delta_bias);
  Tensor du = at::empty_like(uc), dd = at::empty_like(uc);
  Tensor dB = at::empty({s.batch, s.length}, Bc.options()), dC = at::empty({s.batch, s.length}, Cc.options());
  const auto f32 = u.options().dtype(at::kFloat);
  Tensor dA = at::empty({s.dim}, f32), dD = at::empty({s.dim}, f32), dbias = at::empty({s.dim}, f32);
  if (uc.numel() > 0) {
    // Every element of the workspace is written before it is read: no zero-fill on the hot path.
    Tensor workspace = at::empty({openrec::scan_backward_workspace_floats(s)}, f32);
    check_launch(openrec::scan_backward(dtype, bc_f32, gy.data_ptr(), uc.data_ptr(), dc.data_ptr(),
                                        Af.data_ptr<float>(), Bc.data_ptr(), Cc.data_ptr(), Df.data_ptr<float>(),
                                        bf.data_ptr<float>(), st.data_ptr<float>(), du.data_ptr(), dd.data_ptr(),
                                        dB.data_ptr(), dC.data_ptr(), dA.data_ptr<float>(), dD.data_ptr<float>(),
                                        dbias.data_ptr<float>(), workspace.data_ptr<float>(), s,
                                        c10::cuda::getCurrentCUDAStream()),
                 "selective_scan_backward");
  } else {
    for (Tensor* t : {&du, &dd, &dB, &dC, &dA, &dD, &dbias}) t->zero_();
  }
  // Casts are no-ops in the usual cases (fp32 parameters; B, C in u's dtype or fp32).
  return {du,
          dd.to(delta.scalar_type()),
          dA.reshape(A.sizes()).to(A.scalar_type()),
          dB.to(B.scalar_type()),
          dC.to(C.scalar_type()),
          dD.to(D.scalar_type()),
          dbias.to(delta_bias.scalar_type())};
}

// ----------------------------------------------------------------------------------- column sum
// x (rows, cols) -> fp32 (cols): the sum over the rows (a linear layer's bias gradient).
Tensor column_sum_cuda(const Tensor& x) {
  TORCH_CHECK(x.dim() == 2, "openrec::column_sum: x must be (rows, cols), got ", x.sizes());
  TORCH_CHECK(x.is_cuda(), "openrec::column_sum: x must be a CUDA tensor");
  TORCH_CHECK(x.size(1) < (int64_t{1} << 31), "openrec::column_sum: too many columns: ", x.size(1));
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = kernel_dtype(x, "column_sum");
  const int64_t rows = x.size(0);
  const int cols = static_cast<int>(x.size(1));
  Tensor out = at::empty({x.size(1)}, x.options().dtype(at::kFloat));  // the finalize writes every column
  if (rows == 0 || cols == 0) return out.zero_();
  const Tensor xc = x.contiguous();
  Tensor workspace = at::empty({openrec::column_sum_workspace_floats(rows, cols, dtype)}, out.options());
  check_launch(openrec::column_sum(dtype, xc.data_ptr(), out.data_ptr<float>(), workspace.data_ptr<float>(), rows,
                                   cols, c10::cuda::getCurrentCUDAStream()),
               "column_sum");
  return out;
}

// ------------------------------------------------------------------------------------ LayerNorm
// Callers route only shapes the kernel takes (openrec/ops/layer_norm.py); anything else is an error
// that names the limit.
int64_t layer_norm_cols(const Tensor& x, const Tensor& weight, const Tensor& bias, const char* op) {
  TORCH_CHECK(x.dim() >= 1, "openrec::", op, ": x must have at least one dimension");
  const int64_t cols = x.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == cols && bias.sizes() == weight.sizes(), "openrec::", op,
              ": weight and bias must have x's last dim (", cols, ") elements, got ", weight.sizes(), " and ",
              bias.sizes());
  TORCH_CHECK(weight.scalar_type() == bias.scalar_type() &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == x.scalar_type()),
              "openrec::", op, ": weight and bias must both be float32 or x's dtype, got ", weight.scalar_type(),
              " and ", bias.scalar_type(), " for x ", x.scalar_type());
  TORCH_CHECK(cols > 0 && cols <= openrec::kLayerNormMaxCols, "openrec::", op, ": the CUDA kernel takes 1 to ",
              openrec::kLayerNormMaxCols, " channels, got ", cols);
  TORCH_CHECK(x.is_cuda() && weight.device() == x.device() && bias.device() == x.device(), "openrec::", op,
              ": tensors must be on one CUDA device");
  return cols;
}

std::tuple<Tensor, Tensor, Tensor> layer_norm_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                   double eps) {
  const int64_t cols = layer_norm_cols(x, weight, bias, "layer_norm");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = kernel_dtype(x, "layer_norm");
  const Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
  Tensor y = at::empty_like(xc);
  auto stat_sizes = x.sizes().vec();
  stat_sizes.pop_back();
  Tensor mean = at::empty(stat_sizes, x.options().dtype(at::kFloat)), rstd = at::empty_like(mean);
  const int64_t rows = xc.numel() / cols;
  if (rows == 0) return {y, mean, rstd};
  check_launch(openrec::layer_norm_forward(dtype, wc.scalar_type() == at::kFloat, xc.data_ptr(), wc.data_ptr(),
                                           bc.data_ptr(), y.data_ptr(), mean.data_ptr<float>(),
                                           rstd.data_ptr<float>(), rows, static_cast<int>(cols),
                                           static_cast<float>(eps), c10::cuda::getCurrentCUDAStream()),
               "layer_norm");
  return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> layer_norm_backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& mean,
                                                            const Tensor& rstd, const Tensor& weight) {
  const int64_t cols = layer_norm_cols(x, weight, weight, "layer_norm_backward");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "openrec::layer_norm_backward: grad_y ", grad_y.sizes(), " must match x ",
              x.sizes());
  const int64_t rows = x.numel() / cols;
  TORCH_CHECK(mean.numel() == rows && rstd.numel() == rows, "openrec::layer_norm_backward: mean and rstd must have ",
              rows, " elements (one per row)");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = kernel_dtype(x, "layer_norm_backward");
  const Tensor xc = x.contiguous(), gy = grad_y.to(x.scalar_type()).contiguous(), wc = weight.contiguous();
  const Tensor mf = as_float(mean), rf = as_float(rstd);
  Tensor grad_x = at::empty_like(xc), grad_w = at::empty_like(wc), grad_b = at::empty_like(wc);
  if (rows == 0) return {grad_x, grad_w.zero_(), grad_b.zero_()};
  // Every element of the workspace is written before it is read: no zero-fill on the hot path.
  Tensor workspace = at::empty({openrec::layer_norm_backward_workspace_floats(rows, static_cast<int>(cols))},
                               x.options().dtype(at::kFloat));
  check_launch(openrec::layer_norm_backward(dtype, wc.scalar_type() == at::kFloat, gy.data_ptr(), xc.data_ptr(),
                                            mf.data_ptr<float>(), rf.data_ptr<float>(), wc.data_ptr(),
                                            grad_x.data_ptr(), grad_w.data_ptr(), grad_b.data_ptr(),
                                            workspace.data_ptr<float>(), rows, static_cast<int>(cols),
                                            c10::cuda::getCurrentCUDAStream()),
               "layer_norm_backward");
  return {grad_x, grad_w, grad_b};
}

// ---------------------------------------------------------------------------- depthwise 3x3 conv
// x (N, C, H, W) is read channels-last (a copy is made when it is not); weight (C, 1, 3, 3) and bias
// (C) both fp32 or x's dtype. Callers route only shapes the kernel takes (openrec/ops/dwconv.py).
void dwconv_check(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t mode, const char* op) {
  TORCH_CHECK(x.dim() == 4, "openrec::", op, ": x must be (N, C, H, W), got ", x.sizes());
  const int64_t c = x.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == c && weight.size(1) == 1 && weight.size(2) == 3 &&
                  weight.size(3) == 3 && bias.dim() == 1 && bias.size(0) == c,
              "openrec::", op, ": weight must be (", c, ", 1, 3, 3) and bias (", c, "), got ", weight.sizes(), " and ",
              bias.sizes());
  TORCH_CHECK(weight.scalar_type() == bias.scalar_type() &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == x.scalar_type()),
              "openrec::", op, ": weight and bias must both be float32 or x's dtype, got ", weight.scalar_type(),
              " and ", bias.scalar_type(), " for x ", x.scalar_type());
  TORCH_CHECK(c % 4 == 0 && c <= INT32_MAX && x.size(2) <= INT32_MAX && x.size(3) <= INT32_MAX, "openrec::", op,
              ": the CUDA kernel takes channel counts divisible by 4, got ", c);
  TORCH_CHECK(mode >= 0 && mode <= 3, "openrec::", op, ": mode must be 0 (plain), 1 (residual), 2 (silu) or 3 (gelu_residual), got ",
              mode);
  TORCH_CHECK(x.is_cuda() && weight.device() == x.device() && bias.device() == x.device(), "openrec::", op,
              ": tensors must be on one CUDA device");
}

// Channels-last and aligned for the kernel's 4-element vector loads (a view at an odd offset is copied).
Tensor channels_last_operand(const Tensor& t) {
  Tensor c = t.contiguous(at::MemoryFormat::ChannelsLast);
  const auto align = static_cast<uintptr_t>(4 * c.element_size());
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % align != 0) c = c.clone(at::MemoryFormat::ChannelsLast);
  return c;
}

Tensor dwconv3x3_cuda(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t mode) {
  dwconv_check(x, weight, bias, mode, "dwconv3x3");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = kernel_dtype(x, "dwconv3x3");
  const Tensor xc = channels_last_operand(x), wc = weight.contiguous(), bc = bias.contiguous();
  Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  check_launch(openrec::dwconv3x3_forward(dtype, wc.scalar_type() == at::kFloat, static_cast<int>(mode), xc.data_ptr(),
                                          wc.data_ptr(), bc.data_ptr(), y.data_ptr(), x.size(0),
                                          static_cast<int>(x.size(2)), static_cast<int>(x.size(3)),
                                          static_cast<int>(x.size(1)), c10::cuda::getCurrentCUDAStream()),
               "dwconv3x3");
  return y;
}

std::tuple<Tensor, Tensor, Tensor> dwconv3x3_backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                                           const Tensor& bias, int64_t mode) {
  dwconv_check(x, weight, bias, mode, "dwconv3x3_backward");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "openrec::dwconv3x3_backward: grad_y ", grad_y.sizes(), " must match x ",
              x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = kernel_dtype(x, "dwconv3x3_backward");
  const Tensor xc = channels_last_operand(x), gy = channels_last_operand(grad_y.to(x.scalar_type()));
  const Tensor wc = weight.contiguous(), bc = bias.contiguous();
  Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  Tensor grad_w = at::empty_like(wc), grad_b = at::empty_like(bc);
  if (x.numel() == 0) return {grad_x, grad_w.zero_(), grad_b.zero_()};
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  // Every element of the workspace is written before it is read: no zero-fill on the hot path.
  Tensor workspace = at::empty({openrec::dwconv3x3_backward_workspace_floats(n, static_cast<int>(h),
                                                                             static_cast<int>(w), static_cast<int>(c))},
                               x.options().dtype(at::kFloat));
  Tensor g_buffer = mode == 2 ? at::empty_like(grad_x) : Tensor();
  check_launch(openrec::dwconv3x3_backward(dtype, wc.scalar_type() == at::kFloat, static_cast<int>(mode), gy.data_ptr(),
                                           xc.data_ptr(), wc.data_ptr(), bc.data_ptr(), grad_x.data_ptr(),
                                           grad_w.data_ptr(), grad_b.data_ptr(),
                                           mode == 2 ? g_buffer.data_ptr() : nullptr, workspace.data_ptr<float>(), n,
                                           static_cast<int>(h), static_cast<int>(w), static_cast<int>(c),
                                           c10::cuda::getCurrentCUDAStream()),
               "dwconv3x3_backward");
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(openrec, CUDA, m) {
  m.impl("das_sample", &das_sample_cuda);
  m.impl("das_sample_backward", &das_sample_backward_cuda);
  m.impl("selective_scan", &selective_scan_cuda);
  m.impl("selective_scan_backward", &selective_scan_backward_cuda);
  m.impl("column_sum", &column_sum_cuda);
  m.impl("layer_norm", &layer_norm_cuda);
  m.impl("layer_norm_backward", &layer_norm_backward_cuda);
  m.impl("dwconv3x3", &dwconv3x3_cuda);
  m.impl("dwconv3x3_backward", &dwconv3x3_backward_cuda);
}

"""Selective scan with d_state = 1, as a ``torch.library`` custom op.

Semantics (the specification every kernel must match), for u, delta of shape (batch, D, L)::

    dt_t = softplus(delta_t + delta_bias)        (identity instead of softplus if delta_softplus=False)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,   h_{-1} = 0
    y_t  = h_t * C_t + D * u_t

A: (D, 1), negative; B, C: (batch, 1, L); D, delta_bias: (D,). The state and all math are fp32
(float64 for float64 inputs); y and the gradients come back in the input dtypes.

The PyTorch implementation is a Hillis-Steele doubling scan over (decay, input) pairs: it only
multiplies decays in (0, 1] and adds, so it cannot overflow at any length (unlike the
"divide by cumulative decay" form), and needs log2(L) vectorised steps instead of L.
Backward recomputes h from the inputs and runs the adjoint as a reverse scan.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import warn_pytorch_fallback

__all__ = ["selective_scan", "selective_scan_torch", "selective_scan_backward_torch", "linear_scan_fixed_steps",
           "export_formulation", "SCAN_CHUNK", "selective_scan_channels_last_torch",
           "selective_scan_channels_last_backward_torch"]

SOFTPLUS_THRESHOLD = 20.0  # F.softplus's default: linear above it


class _ExportFormulation:
    """``with export_formulation():`` the ops run as plain PyTorch (standard ONNX operators) instead of
    custom ops; the scan uses a fixed number of doubling steps so the graph works for any width."""

    active = False

    def __enter__(self):
        type(self).active = True
        return self

    def __exit__(self, *exc):
        type(self).active = False


export_formulation = _ExportFormulation


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3 or u.shape != delta.shape:
        raise ValueError(f"selective_scan: u and delta must both be (batch, D, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    b, d, length = u.shape
    expected = {"A": (A, (d, 1)), "B": (B, (b, 1, length)), "C": (C, (b, 1, length)), "D": (D, (d,)), "delta_bias": (delta_bias, (d,))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape} (d_state=1), got {tuple(t.shape)}")


def linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along the last dim with h_{-1} = 0 (doubling scan, out of place)."""
    a = a.clone()
    h = b.clone()
    length = h.shape[-1]
    step = 1
    while step < length:
        # Combine element t with element t-step: (a, h)_t <- (a_t a_{t-step}, a_t h_{t-step} + h_t).
        h[..., step:] = torch.addcmul(h[..., step:], a[..., step:], h[..., :-step])
        if step * 2 < length:
            a[..., step:] = a[..., step:] * a[..., :-step]
        step *= 2
    return h


def linear_scan_fixed_steps(a: torch.Tensor, b: torch.Tensor, steps: int = 13) -> torch.Tensor:
    """The same doubling scan with a fixed number of steps (exact for L <= 2**steps) whose shifts are
    pad-and-crop, so a traced graph does not depend on L: used for ONNX export with dynamic width."""
    length = b.shape[-1]
    h = b
    for i in range(steps):
        k = 1 << i
        h = h + a * F.pad(h, (k, 0))[..., :length]
        a = a * F.pad(a, (k, 0), value=1.0)[..., :length]
    return h


def _discretise(u, delta, A, B, delta_bias, delta_softplus, cd):
    z = delta.to(cd) + delta_bias.to(cd).unsqueeze(-1)
    dt = F.softplus(z) if delta_softplus else z
    decay = torch.exp(dt * A.to(cd))
    drive = dt * B.to(cd) * u.to(cd)
    return z, dt, decay, drive


def selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True,
                         scan=linear_scan) -> torch.Tensor:
    """Exact PyTorch forward of the d_state=1 selective scan; returns y like u."""
    _check(u, delta, A, B, C, D, delta_bias)
    cd = _compute_dtype(u, delta, A, B, C, D, delta_bias)
    _, _, decay, drive = _discretise(u, delta, A, B, delta_bias, delta_softplus, cd)
    h = scan(decay, drive)
    y = h * C.to(cd) + D.to(cd).unsqueeze(-1) * u.to(cd)
    return y.to(u.dtype)


def selective_scan_backward_torch(grad_y, u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True):
    """Exact PyTorch backward: (du, ddelta, dA, dB, dC, dD, ddelta_bias)."""
    cd = _compute_dtype(grad_y, u, delta, A, B, C, D, delta_bias)
    z, dt, decay, drive = _discretise(u, delta, A, B, delta_bias, delta_softplus, cd)
    h = linear_scan(decay, drive)
    gy = grad_y.to(cd)
    uc, Ac, Bc, Cc, Dc = u.to(cd), A.to(cd), B.to(cd), C.to(cd), D.to(cd)

    dC = (gy * h).sum(1, keepdim=True)
    dD = (gy * uc).sum((0, 2))
    # Adjoint lambda_t = dy_t C_t + decay_{t+1} lambda_{t+1}: a forward scan on reversed sequences.
    decay_next = torch.cat([decay[..., 1:], torch.zeros_like(decay[..., :1])], dim=-1)
    lam = linear_scan(decay_next.flip(-1), (gy * Cc).flip(-1)).flip(-1)
    h_prev = torch.cat([torch.zeros_like(h[..., :1]), h[..., :-1]], dim=-1)

    lam_dt = lam * dt
    du = lam_dt * Bc + gy * Dc.unsqueeze(-1)
    dB = (lam_dt * uc).sum(1, keepdim=True)
    lam_h_decay = lam * h_prev * decay
    d_dt = lam * Bc * uc + lam_h_decay * Ac
    dA = (lam_h_decay * dt).sum((0, 2)).unsqueeze(-1)
    if delta_softplus:
        # Same formula as PyTorch's softplus_backward: e / (e + 1), linear above the threshold.
        e = torch.exp(z.clamp(max=SOFTPLUS_THRESHOLD))
        dz = torch.where(z > SOFTPLUS_THRESHOLD, d_dt, d_dt * e / (e + 1))
    else:
        dz = d_dt
    dbias = dz.sum((0, 2))
    return (du.to(u.dtype), dz.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype), dbias.to(delta_bias.dtype))


# ---- The ops. Their tensors are channels-last, as the DA-Mamba block holds its tokens: u, delta, y
# (batch, L, D); A, D, delta_bias (D,); B, C (batch, L). The forward also returns the state at the
# start of every SCAN_CHUNK steps, (batch, ceil(L/SCAN_CHUNK), D) in fp32 (float64 for float64
# inputs), from which the CUDA backward recomputes each chunk. This file's implementations serve the
# CPU (and CUDA tensors when the extension is not built); csrc/scan_kernels.cu registers the CUDA one.
SCAN_CHUNK = 8  # == openrec::kScanChunk in csrc/openrec_kernels.h


def _check_op(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3 or u.shape != delta.shape:
        raise ValueError(f"openrec::selective_scan: u and delta must both be (batch, L, D); got {tuple(u.shape)} and {tuple(delta.shape)}")
    b, length, d = u.shape
    for name, t, shape in (("A", A, (d,)), ("B", B, (b, length)), ("C", C, (b, length)), ("D", D, (d,)),
                           ("delta_bias", delta_bias, (d,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"openrec::selective_scan: {name} must have shape {shape}, got {tuple(t.shape)}")


def _state_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _public(u, delta, A, B, C):
    """Channels-last op arguments as views in the (batch, D, L) layout of the reference functions."""
    return u.transpose(1, 2), delta.transpose(1, 2), A.unsqueeze(-1), B.unsqueeze(1), C.unsqueeze(1)


def selective_scan_channels_last_torch(u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True):
    """The op's PyTorch implementation on channels-last tensors: returns (y, states)."""
    _check_op(u, delta, A, B, C, D, delta_bias)
    ut, dt, At, Bt, Ct = _public(u, delta, A, B, C)
    cd = _compute_dtype(u, delta, A, B, C, D, delta_bias)
    _, _, decay, drive = _discretise(ut, dt, At, Bt, delta_bias, delta_softplus, cd)
    h = linear_scan(decay.contiguous(), drive.contiguous())
    y = h * Ct.to(cd) + D.to(cd).unsqueeze(-1) * ut.to(cd)
    h_prev = torch.cat([torch.zeros_like(h[..., :1]), h[..., :-1]], dim=-1)
    states = h_prev[..., ::SCAN_CHUNK].transpose(1, 2).to(_state_dtype(u)).contiguous()
    return y.transpose(1, 2).to(u.dtype).contiguous(), states


def selective_scan_channels_last_backward_torch(grad_y, u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True):
    """The backward op's PyTorch implementation (recomputes h; needs no saved states)."""
    ut, dt, At, Bt, Ct = _public(u, delta, A, B, C)
    du, dz, dA, dB, dC, dD, dbias = selective_scan_backward_torch(grad_y.transpose(1, 2), ut, dt, At, Bt, Ct, D,
                                                                  delta_bias, delta_softplus)
    return (du.transpose(1, 2).contiguous(), dz.transpose(1, 2).contiguous(), dA.reshape(A.shape), dB.reshape(B.shape),
            dC.reshape(C.shape), dD, dbias)


@torch.library.custom_op("openrec::selective_scan", mutates_args=())
def _selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor, delta_bias: torch.Tensor, delta_softplus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    warn_pytorch_fallback("selective_scan", u)
    return selective_scan_channels_last_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus):
    _check_op(u, delta, A, B, C, D, delta_bias)
    b, length, d = u.shape
    n_states = -(-length // SCAN_CHUNK)
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            u.new_empty((b, n_states, d), dtype=_state_dtype(u)))


@torch.library.custom_op("openrec::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(grad_y: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                                B: torch.Tensor, C: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor,
                                states: torch.Tensor, delta_softplus: bool
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                           torch.Tensor, torch.Tensor]:
    warn_pytorch_fallback("selective_scan_backward", u)
    return selective_scan_channels_last_backward_torch(grad_y, u, delta, A, B, C, D, delta_bias, delta_softplus)


@_selective_scan_backward_op.register_fake
def _(grad_y, u, delta, A, B, C, D, delta_bias, states, delta_softplus):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (u, delta, A, B, C, D, delta_bias))


def _setup_context(ctx, inputs, output):
    *tensors, delta_softplus = inputs
    ctx.save_for_backward(*tensors, output[1])
    ctx.delta_softplus = delta_softplus


def _backward(ctx, grad_y, grad_states):
    grads = torch.ops.openrec.selective_scan_backward(grad_y, *ctx.saved_tensors, ctx.delta_softplus)
    return (*grads, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = True) -> torch.Tensor:
    """d_state=1 selective scan: y = h*C + D*u with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t.

    Shapes: u, delta (batch, D, L); A (D, 1); B, C (batch, 1, L); D, delta_bias (D,) or None (zeros).
    Any strides; y is returned as a (batch, D, L) view of a channels-last (batch, L, D) tensor.
    """
    channels = u.shape[1]
    if D is None:
        D = torch.zeros(channels, device=u.device, dtype=torch.float32)
    if delta_bias is None:
        delta_bias = torch.zeros(channels, device=u.device, dtype=torch.float32)
    if export_formulation.active:
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus, scan=linear_scan_fixed_steps)
    if u.is_cuda and u.dtype == torch.float64:  # the kernel is fp32/fp16/bf16: float64 stays plain PyTorch
        steps = max(1, (u.shape[-1] - 1).bit_length())
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus,
                                    scan=lambda a, b: linear_scan_fixed_steps(a, b, steps))
    _check(u, delta, A, B, C, D, delta_bias)
    b, _, length = u.shape
    # Transposes are views: a u that is itself a transposed channels-last tensor (as in DASSM) is
    # passed on without a copy, and y comes back as a view of the op's channels-last output.
    y, _ = torch.ops.openrec.selective_scan(u.transpose(1, 2), delta.transpose(1, 2), A.reshape(channels),
                                            B.reshape(b, length), C.reshape(b, length), D, delta_bias,
                                            bool(delta_softplus))
    return y.transpose(1, 2)

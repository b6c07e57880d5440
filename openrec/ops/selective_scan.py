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

__all__ = ["selective_scan", "selective_scan_torch", "selective_scan_backward_torch", "linear_scan_fixed_steps",
           "export_formulation"]

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


@torch.library.custom_op("openrec::selective_scan", mutates_args=())
def _selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor, delta_bias: torch.Tensor, delta_softplus: bool) -> torch.Tensor:
    return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus):
    _check(u, delta, A, B, C, D, delta_bias)
    return torch.empty_like(u, memory_format=torch.contiguous_format)


@torch.library.custom_op("openrec::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(grad_y: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                                B: torch.Tensor, C: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor,
                                delta_softplus: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                               torch.Tensor, torch.Tensor, torch.Tensor]:
    return selective_scan_backward_torch(grad_y, u, delta, A, B, C, D, delta_bias, delta_softplus)


@_selective_scan_backward_op.register_fake
def _(grad_y, u, delta, A, B, C, D, delta_bias, delta_softplus):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (u, delta, A, B, C, D, delta_bias))


def _setup_context(ctx, inputs, output):
    *tensors, delta_softplus = inputs
    ctx.save_for_backward(*tensors)
    ctx.delta_softplus = delta_softplus


def _backward(ctx, grad_y):
    grads = torch.ops.openrec.selective_scan_backward(grad_y.contiguous(), *ctx.saved_tensors, ctx.delta_softplus)
    return (*grads, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus: bool = True) -> torch.Tensor:
    """d_state=1 selective scan: y = h*C + D*u with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t.

    Shapes: u, delta (batch, D, L); A (D, 1); B, C (batch, 1, L); D, delta_bias (D,) or None (zeros).
    """
    if export_formulation.active:
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus, scan=linear_scan_fixed_steps)
    channels = u.shape[1]
    if D is None:
        D = torch.zeros(channels, device=u.device, dtype=torch.float32)
    if delta_bias is None:
        delta_bias = torch.zeros(channels, device=u.device, dtype=torch.float32)
    return torch.ops.openrec.selective_scan(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                                            C.contiguous(), D.contiguous(), delta_bias.contiguous(), bool(delta_softplus))

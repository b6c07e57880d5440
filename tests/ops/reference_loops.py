"""Definitional versions of the two ops, written as plain loops: the specification the fast
implementations and kernels are tested against. Differentiable by autograd (slow; small shapes)."""
import math

import torch


def das_sample_loops(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """out[n,h,w,g*Cg+c] = bilinear sample of channel g*Cg+c at (h + dy, w + dx), zeros outside."""
    n, height, width, channels = x.shape
    groups = offset.shape[-1] // 2
    cg = channels // groups
    out = []
    for h in range(height):
        row = []
        for w in range(width):
            pix = []
            for g in range(groups):
                dx = offset[:, h, w, 2 * g]
                dy = offset[:, h, w, 2 * g + 1]
                vals = []
                for b in range(n):
                    loc_h = h + dy[b]
                    loc_w = w + dx[b]
                    h0, w0 = math.floor(loc_h.item()), math.floor(loc_w.item())
                    lh, lw = loc_h - h0, loc_w - w0
                    acc = torch.zeros(cg, dtype=x.dtype)
                    for hh, ww, weight in ((h0, w0, (1 - lh) * (1 - lw)), (h0, w0 + 1, (1 - lh) * lw),
                                           (h0 + 1, w0, lh * (1 - lw)), (h0 + 1, w0 + 1, lh * lw)):
                        if 0 <= hh < height and 0 <= ww < width:
                            acc = acc + weight * x[b, hh, ww, g * cg:(g + 1) * cg]
                    vals.append(acc)
                pix.append(torch.stack(vals))
            row.append(torch.cat(pix, dim=-1))
        out.append(torch.stack(row, dim=1))
    return torch.stack(out, dim=1)


def selective_scan_loops(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    """Sequential recurrence over t: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t; y_t = h_t C_t + D u_t."""
    b, d, length = u.shape
    h = torch.zeros(b, d, dtype=u.dtype)
    ys = []
    for t in range(length):
        z = delta[:, :, t] + delta_bias
        dt = torch.nn.functional.softplus(z) if delta_softplus else z
        h = torch.exp(dt * A[:, 0]) * h + dt * B[:, :, t] * u[:, :, t]
        ys.append(h * C[:, :, t] + D * u[:, :, t])
    return torch.stack(ys, dim=-1)

"""Selective scan op vs the sequential definition (float64), gradients, gradcheck, opcheck, long L."""
import pytest
import torch
from torch.library import opcheck

from openrec.ops import SCAN_CHUNK, linear_scan, selective_scan
from tests.ops.reference_loops import selective_scan_loops


def _inputs(b, d, length, seed, dtype=torch.float64, delta_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    u, delta = r(b, d, length), r(b, d, length) * delta_scale
    A = -torch.exp(r(d, 1) * 0.5)
    B, C = r(b, 1, length), r(b, 1, length)
    D, bias = r(d), r(d)
    return [u, delta, A, B, C, D, bias]


@pytest.mark.parametrize("shape", [(2, 3, 1), (2, 3, 7), (1, 5, 33), (3, 2, 64)])
@pytest.mark.parametrize("softplus", [True, False])
def test_forward_and_all_grads_match_loops_float64(shape, softplus):
    inputs = _inputs(*shape, seed=sum(shape))
    if not softplus:  # keep dt positive so exp(dt A) is a decay, as in real use
        inputs[1] = inputs[1].abs()
        inputs[6] = inputs[6].abs()
    a = [t.clone().requires_grad_() for t in inputs]
    b = [t.clone().requires_grad_() for t in inputs]
    out = selective_scan(*a, delta_softplus=softplus)
    ref = selective_scan_loops(*b, delta_softplus=softplus)
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-11)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for name, ta, tb in zip("u delta A B C D delta_bias".split(), a, b):
        torch.testing.assert_close(ta.grad, tb.grad, rtol=1e-10, atol=1e-10, msg=f"grad of {name}")


def test_softplus_threshold_region():
    inputs = _inputs(2, 3, 9, seed=5)
    inputs[1] = inputs[1] + 25.0  # above softplus's linear threshold
    a = [t.clone().requires_grad_() for t in inputs]
    b = [t.clone().requires_grad_() for t in inputs]
    selective_scan(*a).sum().backward()
    selective_scan_loops(*b).sum().backward()
    torch.testing.assert_close(a[1].grad, b[1].grad, rtol=1e-10, atol=1e-10)


def test_gradcheck():
    inputs = [t.requires_grad_() for t in _inputs(2, 3, 11, seed=6)]
    assert torch.autograd.gradcheck(lambda *t: selective_scan(*t), inputs)


def _op_args(b, d, length, seed):
    """Channels-last arguments of the op itself: u, delta (b, L, d); A, D, bias (d,); B, C (b, L)."""
    u, delta, A, B, C, D, bias = [t.float() for t in _inputs(b, d, length, seed)]
    return [u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.reshape(d), B.reshape(b, length),
            C.reshape(b, length), D, bias]


def test_opcheck():
    inputs = [t.requires_grad_() for t in _op_args(2, 4, 37, seed=7)]
    opcheck(torch.ops.openrec.selective_scan.default, (*inputs, True))
    _, states = torch.ops.openrec.selective_scan(*inputs, True)
    grad = torch.randn(2, 37, 4)
    opcheck(torch.ops.openrec.selective_scan_backward.default, (grad, *[t.detach() for t in inputs], states.detach(), True))


def test_saved_states_are_the_state_before_each_chunk():
    u, delta, A, B, C, D, bias = _op_args(2, 3, 40, seed=11)
    y, states = torch.ops.openrec.selective_scan(u, delta, A, B, C, D, bias, True)
    n = -(-40 // SCAN_CHUNK)
    assert states.shape == (2, n, 3) and states.dtype == torch.float32
    # h_{t-1} at t = k * SCAN_CHUNK from the definition: with C = 1 and D = 0, y_t is h_t.
    h, _ = torch.ops.openrec.selective_scan(u, delta, A, B, torch.ones_like(C), torch.zeros_like(D), bias, True)
    expected = torch.cat([torch.zeros(2, 1, 3), h[:, SCAN_CHUNK - 1::SCAN_CHUNK][:, :n - 1]], dim=1)
    torch.testing.assert_close(states, expected)


def test_strided_inputs_match_contiguous():
    inputs = _inputs(3, 5, 21, seed=12)
    ref = selective_scan(*inputs)
    u, delta = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in inputs[:2])  # channels-last storage
    out = selective_scan(u, delta, *inputs[2:])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_long_sequence_fp32_is_finite_and_close_to_float64():
    # L = 4096 with large steps: the cumulative decay underflows, which must not produce inf/NaN.
    inputs = _inputs(2, 8, 4096, seed=8, delta_scale=3.0)
    inputs[1] = inputs[1] + 2.0
    ref = selective_scan(*inputs)
    a = [t.float().requires_grad_() for t in inputs]
    out = selective_scan(*a)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in a)


def test_low_precision_io():
    inputs = _inputs(2, 4, 32, seed=9, dtype=torch.float32)
    ref = selective_scan(*inputs)
    low = [t.to(torch.bfloat16) if i in (0, 1, 3, 4) else t for i, t in enumerate(inputs)]
    out = selective_scan(*low)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


def test_linear_scan_matches_recurrence():
    gen = torch.Generator().manual_seed(10)
    a, b = torch.rand(3, 37, generator=gen, dtype=torch.float64), torch.randn(3, 37, generator=gen, dtype=torch.float64)
    h, ref = torch.zeros(3, dtype=torch.float64), []
    for t in range(37):
        h = a[:, t] * h + b[:, t]
        ref.append(h)
    torch.testing.assert_close(linear_scan(a, b), torch.stack(ref, -1), rtol=1e-13, atol=1e-13)


def test_bad_shapes_raise():
    u = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="A must have shape"):
        selective_scan(u, u, torch.randn(3, 2), torch.randn(2, 1, 5), torch.randn(2, 1, 5))

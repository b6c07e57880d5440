"""openrec.modeling.common.attention (skipped without a GPU): cuDNN's attention backend stays off for the
call unless OPENREC_CUDNN_ATTENTION=1, the global flag comes back as it was, and the result is SDPA's."""
import pytest
import torch
import torch.nn.functional as F

from openrec.modeling import common

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _flag_during_call(monkeypatch, q, k, v, mask):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def watched(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(common.F, "scaled_dot_product_attention", watched)
    out = common.attention(q, k, v, attn_mask=mask)
    monkeypatch.setattr(common.F, "scaled_dot_product_attention", sdpa)
    return seen, out


def test_attention_keeps_cudnn_off_and_restores_the_flag(monkeypatch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(300, 2, n, 64, device="cuda", dtype=torch.bfloat16) for n in (7, 33, 33))
    mask = torch.rand(300, 1, 1, 33, device="cuda") > 0.3
    mask[..., 0] = True
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    monkeypatch.delenv("OPENREC_CUDNN_ATTENTION", raising=False)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    seen, out = _flag_during_call(monkeypatch, q, k, v, mask)
    assert seen == [False] and torch.backends.cuda.cudnn_sdp_enabled()
    assert ((out.double() - reference).norm() / reference.norm()).item() < 1e-2
    monkeypatch.setenv("OPENREC_CUDNN_ATTENTION", "1")
    seen, _ = _flag_during_call(monkeypatch, q, k, v, mask)
    assert seen == [True]
    monkeypatch.setenv("OPENREC_CUDNN_ATTENTION", "yes")
    with pytest.raises(ValueError, match="OPENREC_CUDNN_ATTENTION"):
        common.attention(q, k, v)
    monkeypatch.delenv("OPENREC_CUDNN_ATTENTION")
    torch.backends.cuda.enable_cudnn_sdp(False)  # a user's own choice stays
    try:
        seen, _ = _flag_during_call(monkeypatch, q, k, v, mask)
        assert seen == [False] and not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)

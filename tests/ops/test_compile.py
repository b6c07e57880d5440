"""torch.compile traces a DA-Mamba block through both custom ops with no graph break (fullgraph)."""
import torch

from openrec.modeling.encoders.dassm import DASSMBlock


def test_dassm_block_compiles_fullgraph_forward_and_backward():
    torch.manual_seed(0)
    block = DASSMBlock(32, head_dim=16).eval()
    with torch.no_grad():  # non-zero offsets, so DAS really resamples
        block.token_mixer.da_scan.offset.weight.normal_(0, 0.5)
    x = torch.randn(2, 32, 4, 9)
    x_ref = x.clone().requires_grad_()
    ref = block(x_ref)
    ref.square().sum().backward()
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)  # fullgraph: a break is an error
    x_c = x.clone().requires_grad_()
    out = compiled(x_c)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x_c.grad, x_ref.grad)


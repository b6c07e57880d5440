"""How far tests/gpu/test_train_graphs.py's graphed bf16 GTC training parts from eager (perf notes 67
and 68): the eager model against itself, twice, and against the graphed one, per attention backend,
from the test's start (DAS offsets half a pixel off the grid) and from the shipped zero start, where
bilinear sampling's slope jumps and rounding noise moves the offset gradient by O(1).

    PYTHONPATH=/tmp/site:$PWD python3 scripts/graph_test_diag.py   # on a GPU, after the build
"""
import copy
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.getcwd())
os.environ.update(OPENREC_LAYER_NORM="kernel", OPENREC_DWCONV="kernel")
from openrec.losses import build_loss  # noqa: E402
from openrec.modeling import build_model  # noqa: E402
from openrec.text import build_charset  # noqa: E402
from tests.gpu.test_train_graphs import batches, offsets_off_the_grid, run  # noqa: E402
from tests.helpers import LOSSES, tiny_arch  # noqa: E402

torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
head = "GTC"
torch.manual_seed(0)
charset = build_charset(None, False, 25)
model = build_model(tiny_arch(head, drop_path_rate=0.0), charset).cuda()
loss_fn = build_loss(LOSSES[head], charset)
shapes = [(6, 128), (4, 96), (6, 128), (3, 160), (4, 96), (6, 128), (3, 160)]
data = batches(head, charset, shapes, seed=int(torch.randint(0, 10**6, ())))
names = [n for n, p in model.named_parameters()]


def worst(g1, g2):
    """(relative error, parameter name, step) of the worst gradient, each relative to its own scale
    floored at 1% of the step's largest gradient, as the test measures it."""
    out = (0.0, "", -1)
    for step, (a_list, b_list) in enumerate(zip(g1, g2)):
        floor = 1e-2 * max(float(a.abs().max()) for a in a_list)
        labels = names if len(names) == len(a_list) else [f"gradient #{k}" for k in range(len(a_list))]
        for name, a, b in zip(labels, a_list, b_list):
            err = float((a - b).abs().max()) / (max(float(a.abs().max()), floor) + 1e-12)
            out = max(out, (err, name, step))
    return out


# Arms: (label, start, OPENREC_CUDNN_ATTENTION, SDPA backends allowed). The test's start has the DAS
# offsets half a pixel off the grid; the shipped start has them at zero. (Deterministic algorithms
# cannot run this model: PyTorch's CUDA CTC backward has no deterministic implementation; note 68.)
off_grid = copy.deepcopy(model)
offsets_off_the_grid(off_grid)
ALL = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
ARMS = [("OPENREC_CUDNN_ATTENTION=0", off_grid, "0", ALL),
        ("OPENREC_CUDNN_ATTENTION=1", off_grid, "1", ALL),
        ("math", off_grid, "0", [SDPBackend.MATH]),
        ("OPENREC_CUDNN_ATTENTION=0, offsets on the grid", model, "0", ALL)]
for arm, start, cudnn_attention, backends in ARMS:
    os.environ["OPENREC_CUDNN_ATTENTION"] = cudnn_attention
    try:
        with sdpa_kernel(backends):
            l1, g1, _ = run(start, loss_fn, data, torch.bfloat16, graphs=False)
            l2, g2, _ = run(start, loss_fn, data, torch.bfloat16, graphs=False)
            l3, g3, _ = run(start, loss_fn, data, torch.bfloat16, graphs=True)
    except RuntimeError as e:  # a capture refused
        print(f"{arm}: {str(e).splitlines()[0][:200]}")
        continue
    print(f"{arm}: worst (error/scale, parameter, step): eager vs eager {worst(g1, g2)}; "
          f"eager vs graphed {worst(g1, g3)} (the test allows 0.1); losses equal eager/eager {torch.equal(l1, l2)}")

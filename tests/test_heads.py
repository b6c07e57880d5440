"""Each head + loss: a tiny model overfits 8 fixed images, and outputs are dicts in train and eval."""
import random

import pytest
import torch

from openrec.losses import build_loss
from openrec.modeling import build_model
from openrec.text import build_charset, build_label_encoder, build_postprocess, collate_labels
from tests.helpers import LABELS, LOSSES, tiny_arch

WORDS = ["cat", "Dog", "42", "tree", "A1b2", "sun", "MOON", "zip"]
POST = {"CTC": {"name": "CTCLabelDecode"}, "RCTC": {"name": "CTCLabelDecode"}, "GTC": {"name": "GTCLabelDecode"}}


def _setup(head):
    torch.manual_seed(0)
    charset = build_charset(max_text_length=10)
    model = build_model(tiny_arch(head), charset)
    batch = collate_labels(build_label_encoder(LABELS[head], charset), WORDS, random.Random(0))
    images = torch.randn(len(WORDS), 3, 32, 64)
    return charset, model, batch, images


@pytest.mark.parametrize("head,steps", [("CTC", 300), ("RCTC", 300), ("GTC", 300)])
def test_overfits_eight_images(head, steps):
    charset, model, batch, images = _setup(head)
    loss_fn = build_loss(LOSSES[head], charset)
    post = build_postprocess(POST[head], charset)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    first = None
    for step in range(steps):
        losses = loss_fn(model(images, batch), batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        first = first if first is not None else losses["loss"].item()
    last = losses["loss"].item()
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    decoded = post(outputs)
    assert last <= 0.1 * first, (first, last)
    assert decoded["text"] == WORDS
    if head == "GTC":
        assert decoded["smtr_text"] == WORDS


@pytest.mark.parametrize("head", ["CTC", "RCTC", "GTC"])
def test_outputs_are_dicts_in_train_and_eval(head):
    charset, model, batch, images = _setup(head)
    model.train()
    train_out = model(images[:2], {k: v[:2] for k, v in batch.items()})
    model.eval()
    with torch.no_grad():
        eval_out = model(images[:2])
    assert isinstance(train_out, dict) and isinstance(eval_out, dict)
    assert train_out["ctc_logits"].shape == eval_out["ctc_logits"].shape == (2, 16, charset.num_ctc_classes)
    if head == "GTC":
        assert {"smtr_next_logits", "smtr_pre_logits"} <= set(train_out)
        assert eval_out["smtr_probs"].shape[-1] == charset.num_smtr_classes


def test_gtc_detach_stops_ctc_gradient_into_encoder():
    charset = build_charset()
    arch = tiny_arch("GTC")
    arch["Decoder"]["detach"] = True
    model = build_model(arch, charset)
    out = model(torch.randn(2, 3, 32, 64), collate_labels(build_label_encoder(LABELS["GTC"], charset), ["ab", "cd"]))
    out["ctc_logits"].sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.decoder.ctc_decoder.parameters())


def test_ctc_loss_values():
    from openrec.losses import CTCLoss
    # Two frames, classes {blank, a}; target "a": paths "a-", "-a", "aa" -> p = 3 * 0.25 = 0.75.
    logits = torch.zeros(1, 2, 2)
    batch = {"ctc_label": torch.tensor([[1]]), "ctc_length": torch.tensor([1])}
    loss = CTCLoss()({"ctc_logits": logits}, batch)["loss"]
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(0.75)).item(), abs=1e-6)
    # A label longer than the frames cannot be aligned: zero_infinity gives 0, not inf.
    batch = {"ctc_label": torch.tensor([[1, 1, 1]]), "ctc_length": torch.tensor([3])}
    assert CTCLoss(zero_infinity=True)({"ctc_logits": logits}, batch)["loss"].item() == 0.0
    assert torch.isinf(CTCLoss(zero_infinity=False)({"ctc_logits": logits}, batch)["loss"])

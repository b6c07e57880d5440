"""SMTR: sub-string matching recognition.

A question token reads a prompt built from a ``sub_str_len``-character context (plus a learned
prefix slot), then queries the visual tokens, and predicts the next character after the context
(``next`` direction) or the one before it (``pre``). Training is teacher-forced on the substrings
of the label (both directions in one pass); inference slides a window over its own predictions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...registry import DECODERS
from ...text.charset import Charset
from ..common import DropPath, attention, drop_path_rates

__all__ = ["SMTRDecoder", "CrossAttention", "SubstringMatchLayer"]


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Nq, C), context (B, Nk, C), mask (B, 1, 1, Nk) bool (True = attend)."""
        b, nq, c = query.shape
        heads, hd = self.num_heads, c // self.num_heads
        q = self.q(query).reshape(b, nq, heads, hd).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class SubstringMatchLayer(nn.Module):
    """question += CrossAttn(question, prompt); then question = CrossAttn(question, visual) (no residual)."""

    def __init__(self, dim: int, prompt_heads: int, visual_heads: int, drop_path: float = 0.0):
        super().__init__()
        self.norm_question = nn.LayerNorm(dim)
        self.norm_prompt = nn.LayerNorm(dim)
        self.prompt_attn = CrossAttention(dim, prompt_heads)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_visual = nn.LayerNorm(dim)
        self.visual_attn = CrossAttention(dim, visual_heads)
        self.drop_path = DropPath(drop_path)

    def forward(self, question, prompt, prompt_mask, visual):
        """question (B, n, C), prompt (B, n, P, C), prompt_mask (B, n, P) bool, visual (B, L, C)."""
        b, n, c = question.shape
        q = question.reshape(b * n, 1, c)
        q = q + self.drop_path(self.prompt_attn(self.norm_question(q), self.norm_prompt(prompt.flatten(0, 1)),
                                                prompt_mask.reshape(b * n, 1, 1, -1)))
        return self.visual_attn(self.norm_query(q.reshape(b, n, c)), self.norm_visual(visual))


@DECODERS.register("SMTRDecoder")
class SMTRDecoder(nn.Module):
    """Train: ``{'smtr_next_logits': (B, n, K), 'smtr_pre_logits': (B, n', K)}`` from the batch's
    substrings. Eval: ``{'smtr_probs': (B, T, K)}`` by greedy next-direction decoding (T <= max_len+1).
    K = N + 2 classes (EOS, characters, BOS)."""

    def __init__(self, in_channels: int, charset: Charset, num_layer: int = 1, num_heads: int | None = None,
                 visual_heads: int = 2, drop_path_rate: float = 0.1, sub_str_len: int = 5):
        super().__init__()
        dim = in_channels
        self.charset = charset
        self.dim = dim
        self.sub_str_len = sub_str_len
        self.max_len = charset.max_text_length
        self.char_embed = nn.Embedding(charset.num_smtr_tokens, dim)
        nn.init.normal_(self.char_embed.weight, std=dim ** -0.5)
        self.next_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pre_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.prompt_next_embed = nn.Parameter(torch.zeros(1, sub_str_len + 1, dim))
        self.prompt_pre_embed = nn.Parameter(torch.zeros(1, sub_str_len + 1, dim))
        dpr = drop_path_rates(drop_path_rate, num_layer + 2)
        self.layers = nn.ModuleList([SubstringMatchLayer(dim, num_heads or dim // 32, visual_heads, dpr[i])
                                     for i in range(num_layer)])
        self.norm_pred = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, charset.num_smtr_classes)
        for p in (self.next_token, self.pre_token, self.prompt_next_embed, self.prompt_pre_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {"next_token", "pre_token", "prompt_next_embed", "prompt_pre_embed", "char_embed"}

    def _prompts(self, subs: torch.Tensor, prompt_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """subs (B, n, S) token ids -> prompt (B, n, S+1, C) and mask (B, n, S+1) (context pads hidden)."""
        b, n, s = subs.shape
        chars = self.char_embed(subs) * math.sqrt(self.dim)
        prompt = torch.cat([prompt_embed[:, :1].expand(b * n, 1, self.dim).reshape(b, n, 1, self.dim),
                            prompt_embed[:, 1:].unsqueeze(0) + chars], dim=2)
        cs = self.charset
        visible = (subs != cs.smtr_inf) & (subs != cs.smtr_inb) & (subs != cs.smtr_pad)
        mask = torch.cat([torch.ones_like(visible[..., :1]), visible], dim=-1)
        return prompt, mask

    def _match(self, visual, question, prompt, mask) -> torch.Tensor:
        for layer in self.layers:
            question = layer(question, prompt, mask, visual)
        return self.head(self.norm_pred(question))

    def forward(self, feats: torch.Tensor, batch: dict | None = None) -> dict:
        visual = feats.flatten(2).transpose(1, 2) if feats.dim() == 4 else feats
        if self.training:
            if batch is None or "smtr_next_subs" not in batch:
                raise ValueError("SMTRDecoder in training needs the SMTR label fields (use SMTRLabelEncode/GTCLabelEncode)")
            return self.forward_train(visual, batch)
        return {"smtr_probs": self.forward_greedy(visual)}

    def forward_train(self, visual: torch.Tensor, batch: dict) -> dict:
        b = visual.shape[0]
        n = int(batch["smtr_next_count"].max())
        n_pre = int(batch["smtr_pre_count"].max())
        p_next, m_next = self._prompts(batch["smtr_next_subs"][:, :n], self.prompt_next_embed)
        p_pre, m_pre = self._prompts(batch["smtr_pre_subs"][:, :n_pre], self.prompt_pre_embed)
        question = torch.cat([self.next_token.expand(b, n, self.dim), self.pre_token.expand(b, n_pre, self.dim)], dim=1)
        logits = self._match(visual, question, torch.cat([p_next, p_pre], 1), torch.cat([m_next, m_pre], 1))
        return {"smtr_next_logits": logits[:, :n], "smtr_pre_logits": logits[:, n:]}

    @torch.no_grad()
    def forward_greedy(self, visual: torch.Tensor) -> torch.Tensor:
        b = visual.shape[0]
        cs = self.charset
        window = torch.full((b, 1, self.sub_str_len), cs.smtr_inf, dtype=torch.long, device=visual.device)
        question = self.next_token.expand(b, 1, self.dim)
        done = torch.zeros(b, dtype=torch.bool, device=visual.device)
        steps = []
        for _ in range(self.max_len + 1):
            prompt, mask = self._prompts(window, self.prompt_next_embed)
            probs = self._match(visual, question, prompt, mask)[:, 0].float().softmax(-1)
            pred = probs.argmax(-1)
            steps.append(probs)
            done |= pred == cs.smtr_eos
            if bool(done.all()):
                break
            window = torch.cat([window[:, :, 1:], pred.view(b, 1, 1)], dim=-1)
        return torch.stack(steps, dim=1)

"""The replaced-token-detection step a transformers user would write, from the ELECTRA paper alone.

Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators", section 2:
a small generator G (a masked language model) and a discriminator D share their token embeddings; 15% of the
tokens are masked (85% of them [MASK], the rest unchanged), G predicts them, its samples replace them, D labels
every token as original or replaced, and the loss is L_MLM(G) + lambda L_Disc(D) with lambda = 50; samples are
not back-propagated through. AdamW, linear warmup and decay, gradient clipping at 1. Built on
`ElectraForMaskedLM` + `ElectraForPreTraining` as their documentation shows them, with HF's own losses: the
generator's logits cover every position and the masks come from `torch.bernoulli`, as transformers'
`DataCollatorForLanguageModeling` draws them.

This file is the benchmark's reference: it does not use convbert.
"""

from __future__ import annotations

import torch
import transformers
from torch import Tensor


def electra_config(
    hidden: int, embedding: int, layers: int, heads: int, ffn: int, vocab: int, max_positions: int = 512
) -> transformers.ElectraConfig:
    return transformers.ElectraConfig(
        vocab_size=vocab,
        embedding_size=embedding,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max_positions,
        pad_token_id=0,
    )


class ReferenceElectra(torch.nn.Module):
    """Generator + discriminator with tied embeddings (token, position, type and their LayerNorm)."""

    def __init__(
        self,
        disc: transformers.ElectraConfig,
        gen: transformers.ElectraConfig,
        special_ids: list[int],
        mask_id: int,
        lr: float,
        mask_prob: float = 0.15,
        disc_weight: float = 50.0,
    ):
        super().__init__()
        self.discriminator = transformers.ElectraForPreTraining(disc)
        self.generator = transformers.ElectraForMaskedLM(gen)
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight
        self.special_ids, self.mask_id = torch.tensor(special_ids), mask_id
        self.mask_prob, self.disc_weight = mask_prob, disc_weight
        no_decay = [p for n, p in self.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
        decay = [p for n, p in self.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=1e-6
        )

    def loss(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        special = torch.isin(input_ids, self.special_ids.to(input_ids.device))
        probability = torch.full(input_ids.shape, self.mask_prob, device=input_ids.device).masked_fill(special, 0.0)
        selected = torch.bernoulli(probability).bool()
        to_mask = selected & (torch.rand(input_ids.shape, device=input_ids.device) < 0.85)
        masked = input_ids.masked_fill(to_mask, self.mask_id)
        labels = input_ids.masked_fill(~selected, -100)
        gen = self.generator(
            input_ids=masked, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels
        )
        with torch.no_grad():  # Gumbel-max sampling from the generator, in fp32
            logits = gen.logits[selected].float()
            noise = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-9, 1.0)))
            corrupted = input_ids.clone()
            corrupted[selected] = (logits + noise).argmax(-1)
        is_replaced = (corrupted != input_ids).long()
        disc = self.discriminator(
            input_ids=corrupted, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=is_replaced
        )
        return gen.loss + self.disc_weight * disc.loss

    def step(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        """One optimizer step; returns the (detached) loss."""
        loss = self.loss(input_ids, attention_mask, token_type_ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

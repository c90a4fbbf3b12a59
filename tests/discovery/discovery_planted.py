"""Shared fixtures: a hand-built attention-only model with a planted label-copying circuit.

Vocabulary: 0 pad, 1 BOS, 2-9 fillers, 10-12 markers M0-M2, 13 query "?", 14-16 label words.
Embedding and unembedding are one-hot (logit[t] = residual[t]), no positions, no norms. A prompt
is BOS, fillers with one marker M_c somewhere, then the query; its label is c.

- L1H2 (planted, strong): the query attends to the marker and writes +4 onto label word c.
- L0H1 (planted, weaker): the same circuit in layer 0 with strength 2.
- L1H0 (distractor): attends everywhere, writes the share of fillers onto *all* label words
  equally: large logit effect (cdt-ratio sees it) but no effect on the margin.
- every other head: small random weights.
"""

from __future__ import annotations

import random

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuit_transfer.readout import TaskBatch

D_VOCAB, D_MODEL, D_HEAD = 17, 32, 8
FILLERS = list(range(2, 10))
MARKERS = [10, 11, 12]
QUERY = 13
LABEL_IDS = [14, 15, 16]
PLANTED = [(1, 2), (0, 1)]  # strongest first
DISTRACTOR = (1, 0)


def _plant_copier(attn, head: int, strength: float) -> None:
    attn.W_Q.data[head, QUERY, 0] = 5.0
    for c, m in enumerate(MARKERS):
        attn.W_K.data[head, m, 0] = 5.0
        attn.W_V.data[head, m, 1 + c] = 1.0
        attn.W_O.data[head, 1 + c, LABEL_IDS[c]] = strength


MOVER, READER = (0, 3), (1, 1)  # the two-hop circuit of `build_planted_model(two_hop=True)`


def build_planted_model(seed: int = 0, two_hop: bool = False) -> HookedTransformer:
    """The planted model; with `two_hop`, also a two-head circuit that only acts through layer 1.

    Two-hop: L0H3 (mover) copies the marker's identity into dims 20-22 of the query position (no
    direct effect on any logit); L1H1 (reader) attends from the query to itself and writes that
    identity onto the label words with strength 8 (the strongest head of the model).
    """
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D_MODEL,
        n_ctx=16,
        d_head=D_HEAD,
        n_heads=4,
        d_vocab=D_VOCAB,
        attn_only=True,
        normalization_type=None,
        act_fn="relu",
        seed=seed,
        model_name="planted",
        device="cpu",
    )
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :D_VOCAB] = torch.eye(D_VOCAB)
        model.unembed.W_U[:D_VOCAB, :] = torch.eye(D_VOCAB)
        for block in model.blocks:
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                w = getattr(block.attn, name)
                w.copy_(0.05 * torch.randn(w.shape, generator=gen))
        for layer, head in PLANTED:
            attn = model.blocks[layer].attn
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(attn, name)[head].zero_()
        _plant_copier(model.blocks[1].attn, 2, 4.0)
        _plant_copier(model.blocks[0].attn, 1, 2.0)
        dis = model.blocks[DISTRACTOR[0]].attn
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            getattr(dis, name)[DISTRACTOR[1]].zero_()
        dis.W_V[DISTRACTOR[1], FILLERS, 0] = 1.0
        dis.W_O[DISTRACTOR[1], 0, LABEL_IDS] = 6.0
        if two_hop:
            mover, reader = model.blocks[MOVER[0]].attn, model.blocks[READER[0]].attn
            for attn, head in ((mover, MOVER[1]), (reader, READER[1])):
                for name in ("W_Q", "W_K", "W_V", "W_O"):
                    getattr(attn, name)[head].zero_()
            mover.W_Q[MOVER[1], QUERY, 0] = 5.0
            reader.W_Q[READER[1], QUERY, 0] = 5.0
            reader.W_K[READER[1], QUERY, 0] = 5.0
            for c, m in enumerate(MARKERS):
                mover.W_K[MOVER[1], m, 0] = 5.0
                mover.W_V[MOVER[1], m, 1 + c] = 1.0
                mover.W_O[MOVER[1], 1 + c, 20 + c] = 1.0
                reader.W_V[READER[1], 20 + c, 1 + c] = 1.0
                reader.W_O[READER[1], 1 + c, LABEL_IDS[c]] = 8.0
    model.eval()
    return model


def planted_batch(n_per_class: int | list[int] = 8, seed: int = 0) -> TaskBatch:
    """Prompts of 4-10 tokens; `n_per_class` may differ per class (imbalanced sets)."""
    rng = random.Random(seed)
    counts = n_per_class if isinstance(n_per_class, list) else [n_per_class] * 3
    rows, labels = [], []
    for c, n in enumerate(counts):
        for _ in range(n):
            body = [rng.choice(FILLERS) for _ in range(rng.randint(2, 8))]
            body.insert(rng.randint(0, len(body)), MARKERS[c])
            rows.append([1] + body + [QUERY])
            labels.append(c)
    order = list(range(len(rows)))
    rng.shuffle(order)
    rows, labels = [rows[i] for i in order], [labels[i] for i in order]
    width = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return TaskBatch(
        tokens=tokens,
        attention_mask=mask,
        final_pos=mask.sum(1) - 1,
        labels=torch.tensor(labels),
        label_ids=torch.tensor(LABEL_IDS),
    )

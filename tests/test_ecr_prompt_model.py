"""UniCRS's prompt encoder + frozen LM, and ECR's emotion components, on small real tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crsbench_plugins.ecr.prompt_model import CoAppearance, KGPromptEncoder, LMShape, last_hidden


def tiny_lm(n_layer=2, n_embd=16):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=40, n_layer=n_layer, n_head=2, n_embd=n_embd, n_positions=64,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval().requires_grad_(False)


EDGES = np.array([[0, 0, 1], [1, 1, 2], [2, 0, 3], [4, 1, 0]])


def encoder_for(lm, **kw):
    torch.manual_seed(1)
    return KGPromptEncoder(LMShape(lm.config), token_dim=12, num_entities=6, num_relations=2, edges=EDGES,
                           num_bases=2, n_prefix_rec=3, n_prefix_conv=4, n_emotions=9, **kw)


def batch(entities, n_tokens=(4, 4), ids_len=(5, 5)):
    torch.manual_seed(2)
    b = len(entities)
    width_e = max(len(e) for e in entities)
    ents = torch.full((b, width_e), -1, dtype=torch.long)
    for i, e in enumerate(entities):
        ents[i, :len(e)] = torch.tensor(e)
    t = max(n_tokens)
    tok_mask = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate(n_tokens):
        tok_mask[i, :n] = True
    w = max(ids_len)
    att = torch.zeros(b, w, dtype=torch.long)
    for i, n in enumerate(ids_len):
        att[i, w - n:] = 1
    return {"entities": ents, "tokens": torch.randn(b, t, 12), "token_mask": tok_mask,
            "entity_emotions": torch.rand(b, width_e, 9), "input_ids": torch.randint(3, 40, (b, w)),
            "attention_mask": att}


def test_prompt_shapes_are_the_lm_past_key_values():
    lm = tiny_lm()
    enc = encoder_for(lm)
    b = batch([[0, 1, 2], [3]])
    kv, mask, ent = enc(b["entities"], b["tokens"], b["token_mask"], "rec")
    assert kv.shape == (2, 2, 2, 2, 3 + 3, 8)  # layers, k/v, batch, heads, prefix + entities, head dim
    assert mask.tolist() == [[True] * 6, [True] * 4 + [False] * 2]
    assert ent.shape == (6, 16)  # entity embeddings live in the LM's hidden space (official)
    kv, mask, _ = enc(b["entities"], b["tokens"], b["token_mask"], "conv")
    assert kv.shape[4] == 4 + 4  # conversation: conv prefix + one vector per token


def test_scores_do_not_depend_on_padding_in_the_batch():
    from crsbench_plugins.ecr.pipeline import rec_scores

    lm = tiny_lm()
    enc = encoder_for(lm, local_emotion=True).eval()
    both = batch([[0, 1], [3, 4, 5, 2]], n_tokens=(2, 4), ids_len=(3, 5))
    alone = {k: v[:1] for k, v in both.items()}
    alone["entities"], alone["entity_emotions"] = alone["entities"][:, :2], alone["entity_emotions"][:, :2]
    alone["tokens"], alone["token_mask"] = alone["tokens"][:, :2], alone["token_mask"][:, :2]
    alone["input_ids"], alone["attention_mask"] = alone["input_ids"][:, 2:], alone["attention_mask"][:, 2:]
    with torch.no_grad():
        torch.testing.assert_close(rec_scores(enc, lm, both)[:1], rec_scores(enc, lm, alone), rtol=1e-4, atol=1e-5)


def test_the_prompt_conditions_the_frozen_lm_and_only_the_encoder_learns():
    from crsbench_plugins.ecr.pipeline import rec_scores, weighted_rec_loss

    lm = tiny_lm()
    enc = encoder_for(lm)
    b = batch([[0, 1], [2, 3]])
    with torch.no_grad():
        h1 = last_hidden(lm, *enc(b["entities"], b["tokens"], b["token_mask"], "rec")[:2], b["input_ids"],
                         b["attention_mask"])
        other = dict(b, entities=torch.tensor([[4, 5], [5, 4]]))
        h2 = last_hidden(lm, *enc(other["entities"], other["tokens"], other["token_mask"], "rec")[:2],
                         b["input_ids"], b["attention_mask"])
    assert (h1 - h2).abs().max() > 1e-4  # other entities, other LM state
    lm_before = {k: v.clone() for k, v in lm.state_dict().items()}
    b.update(label_rows=torch.tensor([0, 1]), labels=torch.tensor([5, 1]), weights=torch.ones(2))
    loss = weighted_rec_loss(rec_scores(enc, lm, b), b)
    loss.backward()
    assert enc.node_embeds.grad is not None and enc.node_embeds.grad.abs().sum() > 0  # through the LM
    assert all(p.grad is None for p in lm.parameters())
    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in lm_before.items())


def test_weighted_loss_is_the_official_mean_of_weighted_cross_entropy():
    from crsbench_plugins.ecr.pipeline import weighted_rec_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    b = {"label_rows": torch.tensor([0, 0, 1]), "labels": torch.tensor([0, 2, 1]),
         "weights": torch.tensor([2.0, 1.0, 0.5])}
    ce = -torch.log_softmax(logits, -1)
    expected = (2.0 * ce[0, 0] + 1.0 * ce[0, 2] + 0.5 * ce[1, 1]) / 3  # mean(w*CE), not sum(w*CE)/sum(w)
    torch.testing.assert_close(weighted_rec_loss(logits, b), expected)


def test_co_appearance_counts_later_entities_sharing_an_emotion():
    # dialogue 1: 0 (like), 1 (like, happy), 2 (negative), 3 (happy); dialogue 2: 0 (happy), 3 (happy)
    dialogues = [[(0, (0,)), (1, (0, 2)), (2, (4,)), (3, (2,))], [(0, (2,)), (3, (2,))]]
    co = CoAppearance.from_dialogues(5, dialogues)
    dense = co.rows_for(torch.arange(5)).to_dense()
    # 0 -> 1 (shares like) and 0 -> 3 (dialogue 2, shares happy): one each, row-normalised
    assert dense[0].tolist() == [0, 0.5, 0, 0.5, 0]
    assert dense[1].tolist() == [0, 0, 0, 1.0, 0]   # 1 -> 3 share happy; 1 -> 2 share nothing
    assert dense[2].sum() == 0 and dense[3].sum() == 0 and dense[4].sum() == 0
    assert co.rows_for(torch.tensor([-1, 0])).to_dense()[0].sum() == 0  # padding


def test_global_entities_add_one_prompt_vector_per_entity_with_neighbours():
    lm = tiny_lm()
    co = CoAppearance.from_dialogues(6, [[(0, (0,)), (1, (0,)), (2, (3,))]])
    enc = encoder_for(lm, local_emotion=True, co_appearance=co)
    b = batch([[0, 2], [1]])
    kv, mask, _ = enc(b["entities"], b["tokens"], b["token_mask"], "rec", b["entity_emotions"])
    assert kv.shape[4] == 3 + 2 * 2
    # prefix; entities 0, 2; neighbours: only entity 0 has one (1)
    assert mask.tolist() == [[True] * 3 + [True, True] + [True, False], [True] * 3 + [True, False] + [False, False]]


def test_device_check_catches_an_input_on_another_device():
    from crsbench.devices import DeviceMismatch, check_devices

    lm = tiny_lm().to("meta")
    with check_devices(), pytest.raises(DeviceMismatch, match="meta"):
        lm(input_ids=torch.tensor([[3, 4]]))
    with check_devices() as seen:
        tiny_lm()(input_ids=torch.tensor([[3, 4]]))
    assert seen == {"cpu"}

"""The lean ``drop`` path (no per-token record, batch 1 without sorting or attention mask) keeps the
logits and keep decisions of the full-bookkeeping path and of the original implementation."""

import pytest
import torch
from transformers import AutoTokenizer

from adapler import AdapLeRForSequenceClassification
from adapler.data import collate
from adapler.inference import load_features
from adapler.modeling import NEG, masked_softmax
from conftest import REPO, pruning_model, require


@torch.no_grad()
def reference_drop(model, ids, mask, eta):
    """The original ``drop`` loop (argsort compaction and full-length scatter for every batch size,
    a float key bias always): logits (B, C), keep masks (B, layers, L), CP scores (B, layers, L)."""
    B, L = ids.shape
    hidden = model.bert.embeddings(input_ids=ids)
    pos = torch.arange(L).expand(B, L)
    alive = mask.bool()
    keeps = torch.zeros(B, model.num_layers, L, dtype=torch.bool)
    scores = torch.zeros(B, model.num_layers, L)
    rows = torch.arange(B)[:, None]
    for l in range(model.num_layers):
        p = masked_softmax(model.cps[l](hidden), alive.float())
        keep = alive & ((p >= eta[l] / alive.sum(-1, keepdim=True).float()) | (pos == 0))
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, : int(keep.sum(-1).max())]
        keeps[rows, l, pos] = keep
        scores[rows, l, pos] = torch.where(alive, p, 0.0)
        hidden, pos, alive = hidden[rows, order], pos[rows, order], keep[rows, order]
        hidden = model.run_layer(l, hidden, torch.where(alive, 0.0, NEG))
    return model.classify(hidden), keeps, scores


def padded_batch(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (len(lengths), max(lengths)), generator=g)
    ids[:, 0] = 101
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def check_against_reference(model, ids, mask, scale, atol):
    """Lean and full ``drop`` vs the original loop on one batch; returns whether logits are bit-equal."""
    with torch.no_grad():
        lean = model(input_ids=ids, attention_mask=mask, mode="drop", threshold_scale=scale)
        full = model(input_ids=ids, attention_mask=mask, mode="drop", threshold_scale=scale, output_token_masks=True)
    ref_logits, ref_keep, ref_scores = reference_drop(model, ids, mask, model.effective_eta(scale))
    assert lean.cp_scores is None and lean.keep_masks is None  # nothing full-length was built
    assert torch.equal(lean.logits, full.logits)
    assert torch.equal(lean.layer_lengths, full.layer_lengths) and torch.equal(lean.thresholds, full.thresholds)
    assert torch.equal(full.keep_masks, ref_keep)  # identical keep decisions, token by token
    assert torch.equal(lean.layer_lengths, ref_keep.sum(-1).float())
    assert torch.allclose(full.cp_scores, ref_scores, atol=1e-6)
    assert (lean.logits - ref_logits).abs().max() <= atol
    return torch.equal(lean.logits, ref_logits)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_lean_drop_matches_full_and_original_on_padded_batches(scale):
    model = pruning_model()
    ids, mask = padded_batch([20, 7, 3, 18, 15])
    # the batched path runs the same operations as the original loop: bit-equal logits
    assert check_against_reference(model, ids, mask, scale, atol=0.0)
    if scale > 0:  # the pruning cases really prune, differently per example
        with torch.no_grad():
            lengths = model(input_ids=ids, attention_mask=mask, threshold_scale=scale).layer_lengths
        assert (lengths[:, -1] < mask.sum(-1)).sum() >= 3 and len(set(lengths[:, -1].tolist())) > 1


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_lean_batch_one_matches_original_and_batched_rows(scale):
    model = pruning_model()
    ids, mask = padded_batch([20, 7, 3, 18, 15])
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, threshold_scale=scale, output_token_masks=True)
    for b, n in enumerate(mask.sum(-1).tolist()):
        one = ids[b : b + 1, :n]
        check_against_reference(model, one, torch.ones_like(one), scale, atol=1e-5)
        # a padded single row (batch 1 with padding) drops its padding first: same result
        check_against_reference(model, ids[b : b + 1], mask[b : b + 1], scale, atol=1e-5)
        with torch.no_grad():
            single = model(input_ids=one, threshold_scale=scale, output_token_masks=True)
        assert torch.equal(single.keep_masks[0], batched.keep_masks[b, :, :n])
        assert (single.logits - batched.logits[b]).abs().max() <= 1e-5


def test_lean_batch_one_runs_attention_on_the_kept_tokens_only():
    model = pruning_model()
    ids, _ = padded_batch([20])
    seen = []
    hooks = [layer.register_forward_hook(lambda m, args, kwargs, out: seen.append(
        (out.shape[1], kwargs.get("attention_mask"))), with_kwargs=True) for layer in model.bert.encoder.layer]
    with torch.no_grad():
        out = model(input_ids=ids)
    for h in hooks:
        h.remove()
    assert [n for n, _ in seen] == [int(x) for x in out.layer_lengths[0]] and seen[-1][0] < 20
    assert all(m is None for _, m in seen)  # no padding left, so no mask


@pytest.mark.slow
def test_lean_drop_on_the_shipped_sst2_model(data_dir):
    model_dir = require(REPO / "assets" / "models" / "sst2" / "config.json", "shipped sst2 model").parent
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir).eval()
    features = load_features("sst2", "val[:48]", AutoTokenizer.from_pretrained(model_dir), data_dir)
    equal = []
    for scale in (0.0, 1.0):
        for f in features[:24]:  # batch 1
            ids = torch.tensor([f["input_ids"]])
            equal.append(check_against_reference(model, ids, torch.ones_like(ids), scale, atol=1e-5))
        for i in range(0, len(features), 8):  # padded batches of 8
            batch = collate(features[i : i + 8])
            equal.append(check_against_reference(model, batch["input_ids"], batch["attention_mask"], scale, atol=1e-5))
    with torch.no_grad():
        ids = torch.tensor([features[0]["input_ids"]])
        assert model(input_ids=ids).layer_lengths[0, -1] < ids.shape[1]  # the shipped model prunes
    print(f"bit-equal logits in {sum(equal)} of {len(equal)} calls")

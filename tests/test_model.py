"""The model's three paths, its thresholds, saving/loading (tiny random BERT configs)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from adapler import AdapLeRForSequenceClassification
from adapler.inference import load_classifier
from adapler.modeling import NEG, masked_softmax, soft_removal
from conftest import pruning_model


def random_batch(batch=5, length=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch, length), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    for b, real in enumerate([length, 7, 3, length - 2, 15][:batch]):
        mask[b, real:] = 0
        ids[b, real:] = 0
    return ids, mask


def test_zero_thresholds_equal_vanilla_bert(tiny_model):
    ids, mask = random_batch()
    bert = BertForSequenceClassification(BertConfig(**tiny_model.config.to_dict())).eval()
    missing, _ = bert.load_state_dict(tiny_model.state_dict(), strict=False)
    assert not missing
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).logits
        for mode in ("masked", "drop"):
            out = tiny_model(input_ids=ids, attention_mask=mask, mode=mode, threshold_scale=0.0)
            assert (out.logits - ref).abs().max() <= 1e-5
            assert torch.equal(out.layer_lengths[:, 0], mask.sum(-1).float())


def test_soft_masked_drop_agree_with_padding_and_pruning():
    model = pruning_model()
    ids, mask = random_batch()
    with torch.no_grad():
        soft = model(input_ids=ids, attention_mask=mask, mode="soft", sharpness=1e20)
        masked = model(input_ids=ids, attention_mask=mask, mode="masked")
        drop = model(input_ids=ids, attention_mask=mask, mode="drop", output_token_masks=True)
    # pruning really happened, differently per example
    assert (drop.layer_lengths[:, -1] < mask.sum(-1)).all()
    assert len(set(drop.layer_lengths[:, -1].tolist())) > 1
    assert (soft.logits - masked.logits).abs().max() <= 1e-4
    assert (drop.logits - masked.logits).abs().max() <= 1e-4
    assert torch.equal(drop.keep_masks, masked.keep_masks)
    assert torch.equal(drop.layer_lengths, masked.layer_lengths)
    assert torch.allclose(drop.cp_scores, masked.cp_scores, atol=1e-5)


def test_batched_drop_equals_batch_size_one():
    model = pruning_model()
    ids, mask = random_batch()
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, mode="drop", output_token_masks=True)
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            single = model(input_ids=ids[b : b + 1, :n], mode="drop", output_token_masks=True)
            assert (single.logits - batched.logits[b]).abs().max() <= 1e-4
            assert torch.equal(single.keep_masks[0], batched.keep_masks[b, :, :n])


def test_drop_really_shortens_the_sequence():
    model = pruning_model()
    ids, mask = random_batch(batch=1, length=20)
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
             for layer in model.bert.encoder.layer]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, mode="drop")
    for h in hooks:
        h.remove()
    assert seen == [int(x) for x in out.layer_lengths[0]]
    assert seen[-1] < 20


def test_cls_never_removed_and_padding_never_kept():
    model = pruning_model()
    ids, mask = random_batch()
    with torch.no_grad():
        for mode in ("masked", "drop"):
            out = model(input_ids=ids, attention_mask=mask, mode=mode, thresholds=[1.0] * 4, threshold_scale=50,
                        output_token_masks=True)
            assert out.keep_masks[:, :, 0].all()
            assert not (out.keep_masks & ~mask.bool()[:, None, :]).any()
            assert (out.layer_lengths[:, -1] == 1).all()  # only [CLS] survives such thresholds


def test_threshold_scale_is_monotone():
    model = pruning_model()
    ids, mask = random_batch()
    with torch.no_grad():
        totals = [model(input_ids=ids, attention_mask=mask, threshold_scale=s).layer_lengths.sum().item()
                  for s in (0.0, 0.5, 1.0, 2.0)]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]


def test_soft_removal_continuity_and_limits():
    delta = torch.tensor([[0.1]], dtype=torch.float64)
    for lam in (10.0, 1e3, 1e5):
        x = lambda v: torch.tensor([[v]], dtype=torch.float64)  # noqa: E731
        below, at, above = (soft_removal(x(0.1 + e), delta, lam) for e in (-1e-12, 0.0, 1e-12))
        assert abs(at.item() - (-0.1 / lam)) < 1e-6  # both branches meet at -beta/lambda
        assert abs(below.item() - at.item()) < 1e-5 and abs(above.item() - at.item()) < 1e-5
        assert soft_removal(x(1.0), delta, lam).item() == 0.0  # x = 1 keeps fully
        assert soft_removal(x(0.5), delta, lam).item() >= -0.1 / lam  # above: exp(S) ~ 1
    assert soft_removal(torch.tensor([[0.01]]), delta, 1e5).item() == NEG  # far below: clamped, removed
    # lambda = 10, x = 0.9 delta keeps exp(-1 - 0.01) ~ 0.36 (docs/method.md §3.3 example)
    kept = torch.exp(soft_removal(torch.tensor([[0.09]]), delta, 10.0)).item()
    assert abs(kept - 0.3642) < 1e-3


def test_masked_softmax_ignores_removed_tokens():
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    p = masked_softmax(z, torch.tensor([[1.0, 1.0, 0.0, 1.0]]))
    expected = torch.softmax(torch.tensor([1.0, 2.0, 4.0]), -1)
    assert torch.allclose(p[0, [0, 1, 3]], expected) and p[0, 2] == 0


def test_save_load_round_trip(tmp_path):
    model = pruning_model()
    with torch.no_grad():
        model.eta.copy_(torch.tensor([0.3, 0.5, 0.7, 0.9]))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AdapLeRForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.model_type == "adapler"
    ids, mask = random_batch()
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask)
        b = loaded(input_ids=ids, attention_mask=mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(loaded.eta, model.eta)


def test_loads_plain_bert_classifier(tmp_path):
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=4)
    bert = BertForSequenceClassification(cfg).eval()
    bert.save_pretrained(tmp_path)
    model = AdapLeRForSequenceClassification.from_pretrained(tmp_path).eval()
    assert model.config.model_type == "adapler" and len(model.cps) == 2
    assert torch.allclose(model.eta, torch.full((2,), 0.25))
    ids, mask = random_batch()
    with torch.no_grad():
        diff = (bert(input_ids=ids, attention_mask=mask).logits
                - model(input_ids=ids, attention_mask=mask, threshold_scale=0).logits).abs().max()
    assert diff <= 1e-5


def test_attentions_returned_in_masked_mode(tiny_model):
    ids, mask = random_batch()
    before = tiny_model.config._attn_implementation
    with torch.no_grad():
        out = tiny_model(input_ids=ids, attention_mask=mask, mode="masked", output_attentions=True)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (5, 4, 20, 20)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(5, 4, 20), atol=1e-5)
    assert tiny_model.config._attn_implementation == before  # eager only for that call


def test_bad_mode_and_threshold_length(tiny_model):
    ids, mask = random_batch()

    with pytest.raises(ValueError, match="mode"):
        tiny_model(input_ids=ids, attention_mask=mask, mode="fast")
    with pytest.raises(ValueError, match="thresholds"):
        tiny_model(input_ids=ids, attention_mask=mask, thresholds=[0.1, 0.2])


def test_adapler_folder_as_baseline_is_unpruned(tmp_path):
    """``--baseline`` pointing at an AdapLeR folder must mean its full-length accuracy, not its pruned one."""
    model = pruning_model()
    model.save_pretrained(tmp_path / "adapler")
    baseline = load_classifier(str(tmp_path / "adapler")).eval()
    assert isinstance(baseline, BertForSequenceClassification)
    ids, mask = random_batch()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, threshold_scale=0).logits
        pruned = model(input_ids=ids, attention_mask=mask).logits
        base = baseline(input_ids=ids, attention_mask=mask).logits
    assert (full - base).abs().max() <= 1e-6 < (pruned - base).abs().max()

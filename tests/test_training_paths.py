"""The fast training paths give the same numbers as the plain ones (tiny random models)."""

import pytest
import torch

from adapler import AdapLeRForSequenceClassification
from adapler.inference import load_classifier
from adapler.training import adapler_backward
from conftest import tiny_config


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (3, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    mask[2, 12:] = 0
    return ids, mask


@pytest.mark.parametrize("sharpness", [10.0, 1e3, 1e5])
def test_soft_path_key_weighted_attention_equals_masked_softmax(sharpness):
    """The soft path's attention (bias as a value column, fused kernel) equals softmax(z + b) v:
    same logits, lengths and gradients of eta, CPs and BERT as the plain masked-softmax kernel."""
    torch.manual_seed(0)
    no_dropout = tiny_config(attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    model = AdapLeRForSequenceClassification(no_dropout).train()
    model.eta.data = torch.tensor([0.6, 0.8, 0.9])
    ids, mask = _batch()
    results = []
    for kernel in ("adapler_key_weighted", "eager"):
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, mode="soft", sharpness=sharpness,
                    output_attentions=kernel == "eager")  # attention maps need the eager kernel
        (out.logits.logsumexp(-1).sum() + 0.1 * out.layer_lengths.sum()).backward()
        results.append([out.logits.detach(), out.layer_lengths.detach(), model.eta.grad.clone(),
                        model.cps[1].dense.weight.grad.clone(),
                        model.bert.encoder.layer[0].attention.self.key.weight.grad.clone()])
    assert results[0][1].min() < 40  # tokens really are (softly) removed
    for fast, plain in zip(*results):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_adapler_backward_gives_eta_its_own_objective():
    """eta's gradient is that of CE + phi * length alone; BERT's that of CE + gamma * KL alone."""
    torch.manual_seed(0)
    model = AdapLeRForSequenceClassification(tiny_config(attention_probs_dropout_prob=0.0)).train()
    model.eta.data = torch.tensor([0.6, 0.8, 0.9])
    ids, mask = _batch()
    labels, sal = torch.tensor([0, 1, 1]), torch.rand(ids.shape) * mask
    torch.manual_seed(1)
    adapler_backward(model, model, {"input_ids": ids, "attention_mask": mask, "labels": labels,
                                    "saliency": sal}, 100.0, gamma=0.5, phi=0.0)
    eta_no_phi = model.eta.grad.clone()
    bert_grad = model.bert.encoder.layer[1].output.dense.weight.grad.clone()
    model.zero_grad()
    torch.manual_seed(1)
    adapler_backward(model, model, {"input_ids": ids, "attention_mask": mask, "labels": labels,
                                    "saliency": sal}, 100.0, gamma=0.5, phi=0.3)
    assert not torch.allclose(model.eta.grad, eta_no_phi)  # the length term reaches eta
    torch.testing.assert_close(model.bert.encoder.layer[1].output.dense.weight.grad, bert_grad)  # not BERT
    model.zero_grad()
    torch.manual_seed(1)
    adapler_backward(model, model, {"input_ids": ids, "attention_mask": mask, "labels": labels,
                                    "saliency": sal}, 100.0, gamma=0.0, phi=0.0)
    torch.testing.assert_close(model.eta.grad, eta_no_phi)  # the KL term never reaches eta


def _training_setup():
    """A tiny model in train mode with thresholds that prune, and one batch with labels and saliency."""
    torch.manual_seed(0)
    model = AdapLeRForSequenceClassification(tiny_config(attention_probs_dropout_prob=0.0)).train()
    model.eta.data = torch.tensor([0.6, 0.8, 0.9])
    ids, mask = _batch()
    return model, {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1]),
                   "saliency": torch.rand(ids.shape) * mask}


def _grads_of(model, batch, eta_grad, phi, distill=0.0):
    model.zero_grad()
    torch.manual_seed(1)  # same dropout masks in every call
    adapler_backward(model, model, dict(batch), 100.0, gamma=0.5, phi=phi, eta_grad=eta_grad, distill=distill)
    return (model.eta.grad.clone(), model.theta.grad.clone(),
            {n: p.grad.clone() for n, p in model.named_parameters() if n not in ("eta", "theta")})


def test_local_eta_gradient_is_one_backward_with_the_same_bert_gradients():
    """``eta_grad="local"``: BERT and the CPs get exactly the full mode's gradients (no length term); eta
    and the [CLS] probe the same CE gradient; the length term still reaches eta, along the recurrence."""
    model, batch = _training_setup()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():  # the local lengths are the layer lengths; only their gradient differs
        out = model(input_ids=ids, attention_mask=mask, mode="soft", sharpness=100.0)
    torch.testing.assert_close(out.local_lengths, out.layer_lengths)
    full_eta, full_theta, full_rest = _grads_of(model, batch, "full", phi=0.3)
    local_eta, local_theta, local_rest = _grads_of(model, batch, "local", phi=0.3)
    for name, grad in full_rest.items():
        torch.testing.assert_close(local_rest[name], grad, msg=name)
    ce_only = _grads_of(model, batch, "full", phi=0.0)
    torch.testing.assert_close(_grads_of(model, batch, "local", phi=0.0)[:2], ce_only[:2])
    assert not torch.allclose(local_eta, ce_only[0])  # the length term reaches eta
    assert torch.nn.functional.cosine_similarity(local_eta - ce_only[0], full_eta - ce_only[0], dim=0) > 0.5
    assert local_theta.shape == full_theta.shape


def test_distillation_changes_only_the_classification_loss():
    """``distill`` mixes KL(teacher || student) into CE: with the student's own logits as the teacher the KL
    is 0 (only the CE weight changes); with another teacher the gradients change."""
    model, batch = _training_setup()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.manual_seed(1)
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=mask, mode="soft", sharpness=100.0).logits
    plain = _grads_of(model, batch, "full", phi=0.0)
    half_self = _grads_of(model, {**batch, "teacher_logits": own}, "full", phi=0.0, distill=0.5)
    for name in ("classifier.weight", "bert.encoder.layer.1.output.dense.weight"):
        torch.testing.assert_close(half_self[2][name], 0.5 * plain[2][name])  # the KL's gradient is 0 here
    other = _grads_of(model, {**batch, "teacher_logits": torch.tensor([[3.0, -3.0]] * 3)}, "full", 0.0, 0.5)
    assert not torch.allclose(other[2]["classifier.weight"], half_self[2]["classifier.weight"])


def test_finetune_can_start_from_an_adapler_folder(tmp_path):
    torch.manual_seed(0)
    model = AdapLeRForSequenceClassification(tiny_config())
    model.save_pretrained(tmp_path)
    plain = load_classifier(str(tmp_path), attention_probs_dropout_prob=0.0)
    assert type(plain).__name__ == "BertForSequenceClassification"
    assert plain.config.attention_probs_dropout_prob == 0.0
    torch.testing.assert_close(plain.classifier.weight, model.classifier.weight)
    ids, mask = _batch()
    with torch.no_grad():  # the same classifier as the AdapLeR model with its thresholds at 0
        torch.testing.assert_close(plain.eval()(input_ids=ids, attention_mask=mask).logits,
                                   model.eval()(input_ids=ids, attention_mask=mask, threshold_scale=0.0).logits,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["drop", "masked", "soft"])
def test_inputs_embeds_give_the_input_ids_logits(mode):
    """Embedding-space attribution tools (captum, ferret, inseq) pass inputs_embeds: same logits."""
    torch.manual_seed(0)
    model = AdapLeRForSequenceClassification(tiny_config()).eval()
    model.eta.data = torch.tensor([0.6, 0.8, 0.9])
    ids, mask = _batch()
    with torch.no_grad():
        by_ids = model(input_ids=ids, attention_mask=mask, mode=mode, sharpness=1e3 if mode == "soft" else None)
        embeds = model.bert.embeddings.word_embeddings(ids)
        by_embeds = model(inputs_embeds=embeds, attention_mask=mask, mode=mode,
                          sharpness=1e3 if mode == "soft" else None)
    torch.testing.assert_close(by_embeds.logits, by_ids.logits)
    torch.testing.assert_close(by_embeds.layer_lengths, by_ids.layer_lengths)


def test_forward_rejects_unknown_and_conflicting_arguments():
    model = AdapLeRForSequenceClassification(tiny_config()).eval()
    ids, mask = _batch()
    with pytest.raises(TypeError):
        model(input_ids=ids, attention_mask=mask, treshold_scale=0.5)  # misspelt: no longer swallowed
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=ids, inputs_embeds=model.bert.embeddings.word_embeddings(ids))


def test_hidden_states_in_original_positions():
    """output_hidden_states (ferret and other HF tools ask for it): unpruned = BERT's own hidden states;
    pruned: drop and masked agree on processed tokens, 0 on removed ones."""
    torch.manual_seed(0)
    model = AdapLeRForSequenceClassification(tiny_config()).eval()
    model.eta.data = torch.tensor([0.6, 0.8, 0.9])
    ids, mask = _batch()
    with torch.no_grad():
        bert = model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        unpruned = model(input_ids=ids, attention_mask=mask, threshold_scale=0.0, output_hidden_states=True)
        drop = model(input_ids=ids, attention_mask=mask, mode="drop", threshold_scale=6.0,
                     output_hidden_states=True, output_token_masks=True)
        masked = model(input_ids=ids, attention_mask=mask, mode="masked", threshold_scale=6.0,
                       output_hidden_states=True)
    assert len(unpruned.hidden_states) == model.config.num_hidden_layers + 1
    real = mask.bool()[..., None]
    for ours, ref in zip(unpruned.hidden_states, bert):
        torch.testing.assert_close(ours * real, ref * real, rtol=1e-4, atol=1e-5)
    assert not drop.keep_masks[:, -1][mask.bool()].all()  # something is pruned
    for l, (d, m) in enumerate(zip(drop.hidden_states[1:], masked.hidden_states[1:])):
        kept = drop.keep_masks[:, l][..., None]
        assert (d[~kept.expand_as(d)] == 0).all() and (m[~kept.expand_as(m)] == 0).all()
        torch.testing.assert_close(d, m, rtol=1e-4, atol=1e-4)

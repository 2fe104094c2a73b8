"""AdapLeR in ONNX Runtime: the exported batch-1 ``drop`` graph gives PyTorch's logits and keep
decisions, really shortens the sequence inside the graph, and the CLI exports a model folder."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoTokenizer

from adapler import AdapLeRForSequenceClassification
from adapler.__main__ import main
from adapler.inference import load_features
from adapler.onnx_export import OnnxClassifier, export_adapler, export_vanilla
from conftest import REPO, require, tiny_config


def pruning_model(seed=0):
    """A tiny random model whose CPs are peaked enough that real tokens get removed."""
    torch.manual_seed(seed)
    model = AdapLeRForSequenceClassification(tiny_config(num_hidden_layers=4, num_labels=3)).eval()
    with torch.no_grad():
        for cp in model.cps:
            cp.out.weight.mul_(100)
        model.eta.fill_(0.8)
    return model


def random_ids(length, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (1, length), generator=g)
    ids[0, 0], ids[0, -1] = 101, 102
    return ids


def compare(model, graph, masks_graph, ids, types, scale, atol=1e-4):
    """ONNX vs PyTorch ``drop`` on one example: logits within ``atol``, the same tokens kept at
    every layer (counts from the lean graph, token masks from the graph that outputs them)."""
    with torch.no_grad():
        ref = model(input_ids=ids, token_type_ids=types, threshold_scale=scale, output_token_masks=True)
    logits, lengths = graph(ids.numpy(), types.numpy(), threshold_scale=scale)
    assert np.abs(logits - ref.logits.numpy()).max() <= atol
    assert np.array_equal(lengths, ref.layer_lengths.numpy())
    if masks_graph is not None:
        keep = masks_graph.outputs(ids.numpy(), types.numpy(), threshold_scale=scale)["keep_masks"]
        assert np.array_equal(keep, ref.keep_masks.numpy())
    return ref


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory):
    model = pruning_model()
    tmp = tmp_path_factory.mktemp("onnx")
    graphs = (OnnxClassifier(export_adapler(model, tmp / "model.onnx")),
              OnnxClassifier(export_adapler(model, tmp / "masks.onnx", token_masks=True)),
              OnnxClassifier(export_vanilla(model, tmp / "vanilla.onnx")))
    assert not model.training  # exporting leaves the model in eval mode
    return (model, *graphs, tmp)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_onnx_drop_equals_pytorch_on_inputs_of_different_lengths(tiny_graphs, scale):
    model, graph, masks_graph, _, _ = tiny_graphs
    pruned = 0
    for seed, length in enumerate([2, 3, 7, 16, 41, 120]):
        ids = random_ids(length, seed)
        types = (torch.arange(length) >= length // 2).long()[None]  # segment B in the second half
        ref = compare(model, graph, masks_graph, ids, types, scale)
        pruned += int(ref.layer_lengths[0, -1] < length)
    assert (pruned >= 3) == (scale > 0)  # pruning cases really prune; scale 0 keeps everything


def test_onnx_vanilla_equals_unpruned_model_on_a_padded_batch(tiny_graphs):
    model, _, _, vanilla, _ = tiny_graphs
    ids = torch.cat([random_ids(30, 1), random_ids(30, 2)])
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, mode="masked", threshold_scale=0.0).logits
    logits, lengths = vanilla(ids.numpy(), attention_mask=mask.numpy())
    assert lengths is None and np.abs(logits - ref.numpy()).max() <= 1e-4


def test_onnx_graph_really_shortens_the_sequence(tiny_graphs):
    """ONNX Runtime's profile records the input shape of every node: each layer's query projection
    runs on exactly the tokens that layer keeps."""
    _, _, _, _, tmp = tiny_graphs
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "profile")
    session = ort.InferenceSession(str(tmp / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    ids = random_ids(40, 3).numpy()
    _, lengths = session.run(None, {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
                                    "threshold_scale": np.array(1.0, np.float32)})
    events = json.loads(open(session.end_profiling()).read())
    seen = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and "attention/self/query/MatMul" in name:
            layer = int(name.split("layer.")[1].split("/")[0])
            seen[layer] = e["args"]["input_type_shape"][0]["float"][1]
    assert [seen[l] for l in sorted(seen)] == [int(x) for x in lengths[0]]
    assert seen[max(seen)] < seen[0] <= 40  # tokens really leave the graph


def test_onnx_classifier_rejects_batches_and_padding(tiny_graphs):
    graph = tiny_graphs[1]
    with pytest.raises(ValueError, match="one unpadded example"):
        graph([[101, 7, 102], [101, 8, 102]])
    with pytest.raises(ValueError, match="one unpadded example"):
        graph([101, 7, 0], attention_mask=[1, 1, 0])


def test_export_onnx_cli(tmp_path, base_tokenizer, capsys):
    model = pruning_model()
    model.save_pretrained(tmp_path / "m")
    base_tokenizer.save_pretrained(tmp_path / "m")
    assert main(["export-onnx", "--model", str(tmp_path / "m"), "--output", str(tmp_path / "out")]) == 0
    written = json.loads(capsys.readouterr().out)
    assert set(written) == {"adapler", "vanilla"}
    assert (tmp_path / "out" / "tokenizer.json").exists() and (tmp_path / "out" / "config.json").exists()
    graph = OnnxClassifier(written["adapler"])
    compare(model, graph, None, random_ids(25, 0), torch.zeros(1, 25, dtype=torch.long), 1.0)
    assert main(["export-onnx", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2


def shipped(task):
    return require(REPO / "assets" / "models" / task / "config.json", f"shipped {task} model").parent


@pytest.mark.slow
@pytest.mark.parametrize("task,split,limit", [("sst2", "val", None), ("movies", "test", 50)])
def test_onnx_equals_pytorch_on_shipped_models(task, split, limit, data_dir, tmp_path):
    """The whole SST-2 validation split and 50 Movies test windows (one ORT session, 1 thread)."""
    model_dir = shipped(task)
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir).eval()
    features = load_features(task, split, AutoTokenizer.from_pretrained(model_dir), data_dir)[:limit]
    graph = OnnxClassifier(export_adapler(model, tmp_path / "model.onnx"))
    masks_graph = OnnxClassifier(export_adapler(model, tmp_path / "masks.onnx", token_masks=True))
    if task == "sst2":
        assert len(features) == 872
    kept = total = 0
    for f in features:
        ids = torch.tensor([f["input_ids"]])
        ref = compare(model, graph, masks_graph, ids, torch.zeros_like(ids), 1.0)
        kept, total = kept + float(ref.layer_lengths.sum()), total + ids.shape[1] * model.num_layers
    assert kept < 0.9 * total  # the shipped model prunes

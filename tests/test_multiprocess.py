"""Training on two CPU processes (torchrun, gloo) stays in sync, and equals one process that takes
the same global batch: 32 real SST-2 sentences, a tiny dropout-free BERT, 2 epochs of 4 steps."""

import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from adapler import data as D
from adapler.__main__ import main
from adapler.training import shard_batches
from conftest import REPO

PER_PROCESS, PROCESSES, EXAMPLES = 4, 2, 32  # global batch 8: every share the same size, 4 steps per epoch
# A softmax ignores a shift of its logits, so these biases have a true gradient of 0: what they get is
# float noise, which Adam (eps 1e-12 in AdapLeR training) turns into full-size steps in any direction.
SHIFT_INVARIANT = re.compile(r"attention\.self\.key\.bias|cps\.\d+\.out\.bias")


def torchrun(commands, dump_dir):
    """``python -m adapler`` commands, one after the other, on two gloo processes; returns each
    command's final weights on every process."""
    dump_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(PROCESSES),
           str(REPO / "tests" / "ddp_worker.py"), str(dump_dir), *[a for c in commands for a in (*c, "::")][:-1]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {c[0]: [load_file(dump_dir / f"{c[0]}-rank{r}.safetensors") for r in range(PROCESSES)] for c in commands}


def assert_same(a, b, atol, skip=None):
    assert a.keys() == b.keys()
    for key in a:
        if not (skip and skip.search(key)):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base_tokenizer, data_dir):
    """finetune and train (both from the same random BERT), each on 2 processes with batch 4 and on
    1 process with batch 8; ``out/{ft,tr}{2,1}`` and the weights of each process."""
    out = tmp_path_factory.mktemp("multiprocess")
    torch.manual_seed(0)  # dropout off: the two runs can only agree if nothing random differs
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(cfg).save_pretrained(out / "base")
    base_tokenizer.save_pretrained(out / "base")
    data = ["--task", "sst2", "--data-dir", str(data_dir), "--limit", str(EXAMPLES)]
    assert main(["saliency", *data, "--model", str(out / "base"), "--output", str(out / "sal.safetensors")]) == 0
    common = [*data, "--eval-limit", "16", "--epochs", "2", "--no-bf16", "--seed", "3", "--lr", "1e-3"]
    ft = ["finetune", *common, "--base-model", str(out / "base")]
    tr = ["train", *common, "--init-model", str(out / "base"), "--saliency", str(out / "sal.safetensors"),
          "--anneal", "step", "--phi", "0.05", "--eta-lr", "0.01"]
    per_process = ["--batch-size", str(PER_PROCESS)]
    ranks = torchrun([[*ft, "--output-dir", str(out / "ft2"), *per_process],
                      [*tr, "--output-dir", str(out / "tr2"), *per_process]], out / "ranks")
    global_batch = ["--batch-size", str(PER_PROCESS * PROCESSES)]
    assert main([*ft, "--output-dir", str(out / "ft1"), *global_batch]) == 0
    assert main([*tr, "--output-dir", str(out / "tr1"), *global_batch]) == 0
    return out, ranks


@pytest.mark.parametrize("command", ["finetune", "train"])
def test_processes_hold_identical_weights(runs, command):
    _, ranks = runs
    assert_same(ranks[command][0], ranks[command][1], atol=0)  # bit for bit, eta and theta included
    if command == "train":
        assert {"eta", "theta"} <= ranks[command][0].keys()


@pytest.mark.parametrize("command,folder", [("finetune", "ft"), ("train", "tr")])
def test_two_processes_equal_one_with_the_global_batch(runs, command, folder):
    out, ranks = runs
    single = load_file(out / f"{folder}1" / "run" / "epoch-2" / "model.safetensors")  # the last epoch's weights
    start = load_file(out / "base" / "model.safetensors")
    moved = max((single[k] - start[k]).abs().max().item() for k in start if k in single)
    assert moved > 1e-3  # training really changed the weights the comparison is about
    assert_same(ranks[command][0], single, atol=2e-5, skip=SHIFT_INVARIANT)
    assert_same(load_file(out / f"{folder}2" / "run" / "epoch-2" / "model.safetensors"), single, atol=2e-5,
                skip=SHIFT_INVARIANT)


def test_train_thresholds_moved_the_same_way(runs):
    out, ranks = runs
    eta1 = load_file(out / "tr1" / "run" / "epoch-2" / "model.safetensors")["eta"]
    initial = torch.full_like(eta1, 0.25)  # eta_init: the plain BERT had no thresholds
    assert (eta1 - initial).abs().max() > 1e-3
    torch.testing.assert_close(ranks["train"][1]["eta"], eta1, rtol=0, atol=2e-5)


@pytest.mark.parametrize("n,processes", [(37, 2), (37, 3), (5, 4), (64, 2)])
def test_every_process_gets_the_same_number_of_equal_batches(n, processes):
    lengths = [(i * 7) % 23 + 1 for i in range(n)]
    shares = [shard_batches(lengths, 4, 11, r, processes) for r in range(processes)]
    assert len({len(s) for s in shares}) == 1
    for step in zip(*shares):  # one step: equal shares, disjoint, together one global batch
        assert len({len(b) for b in step}) == 1
        flat = [i for b in step for i in b]
        assert len(flat) == len(set(flat)) and len(flat) <= 4 * processes
    seen = {i for s in shares for b in s for i in b}
    assert n - len(seen) < processes  # at most processes - 1 examples left out per epoch
    assert shard_batches(lengths, 4, 11) == D.length_grouped_batches(lengths, 4, 11)  # one process: unchanged

"""Seconds per training step of each pipeline stage next to a bare forward+backward, side by side.

Every stage runs on the same batch of real Movie Reviews windows (random word pieces without a data
folder), in alternation, and the table gives median seconds and the ratio to the bare
forward+backward of a plain BERT classifier with the same weights:

* bare forward+backward (train mode, attention dropout 0), and with attention dropout 0.1;
* a fine-tuning step (forward+backward+AdamW);
* gradient x input saliency (eval mode, one backward to the embeddings);
* an AdapLeR training step (soft path, CE + gamma*KL, eta's own gradient pass, both optimisers) at
  the start (sharpness 10) and the end (1e5) of the schedule, with flush-to-zero on, and at the end
  with denormals left on; and the part of that step that one backward of ``CE + gamma * KL`` costs (what
  remains is eta's own gradient pass and the two optimisers);
* the AdapLeR step with ``--eta-grad local`` (one backward for everything) at the start and the end, and
  how close its eta gradient comes to the exact one (cosine, relative difference) on the same batch.

    python benchmarks/training_speed.py [--model DIR] [--batch-size 8] [--length 512] [--threads 1] [--bf16]

``--bf16`` runs every stage under bf16 autocast, as the pipeline's commands do where the CPU has bf16
(AVX512-BF16 or AMX); without it everything is fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time

import torch
from transformers import AutoTokenizer

from adapler import AdapLeRForSequenceClassification
from adapler import data as D
from adapler.evaluation import plain_bert_copy
from adapler.losses import HARD_SHARPNESS, cp_kl_loss
from adapler.saliency import gradient_x_input
from adapler.training import adapler_backward, bf16_available


def real_batch(tokenizer, batch_size: int, length: int, data_dir: str | None) -> dict:
    """``batch_size`` windows of exactly ``length`` pieces, from Movies training reviews if present."""
    try:
        examples = D.load_examples("movies", "train", data_dir, limit=batch_size * 4)
        pieces = [tokenizer(ex["text"], add_special_tokens=False)["input_ids"] for ex in examples]
        pieces = [p[: length - 2] for p in pieces if len(p) >= length - 2][:batch_size]
    except (D.DataError, OSError):
        pieces = []
    while len(pieces) < batch_size:
        pieces.append(torch.randint(1000, 20000, (length - 2,)).tolist())
    labels = [i % 2 for i in range(batch_size)]
    feats = [{"input_ids": [tokenizer.cls_token_id, *p, tokenizer.sep_token_id], "label": y}
             for p, y in zip(pieces, labels)]
    return D.collate(feats)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/models/movies", help="AdapLeR model folder (trained CPs)")
    parser.add_argument("--data-dir", default=None, help=f"data folder (default: ${D.DATA_DIR_ENV})")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in every stage (as the commands use it)")
    args = parser.parse_args()
    if args.bf16 and not bf16_available():
        parser.error("--bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); emulated bf16 would be measured")

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    batch = real_batch(tokenizer, args.batch_size, args.length, args.data_dir)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    saliency = torch.rand(batch["input_ids"].shape) * batch["attention_mask"]

    model = AdapLeRForSequenceClassification.from_pretrained(args.model, attention_probs_dropout_prob=0.0)
    bare = plain_bert_copy(model).train()
    bare_dropout = plain_bert_copy(model)
    bare_dropout.config.attention_probs_dropout_prob = 0.1
    for layer in bare_dropout.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.1
    bare_dropout.train()
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-9)
    main_opt = torch.optim.AdamW([p for n, p in model.named_parameters() if n not in ("eta", "theta")], lr=1e-9)
    eta_opt = torch.optim.Adam([model.eta] + ([model.theta] if model.theta is not None else []), lr=1e-9)

    def loss_of(m):
        with autocast():
            logits = m(**inputs).logits
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])

    def fwd_bwd(m):
        def run():
            loss_of(m).backward()
            m.zero_grad(set_to_none=True)
        return run

    def finetune_step():
        loss_of(bare).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def saliency_step():
        with autocast():
            gradient_x_input(bare, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                             batch["labels"])

    def adapler_grads(sharpness: float, eta_grad: str):
        model.train()
        adapler_backward(model, model, {**inputs, "labels": batch["labels"], "saliency": saliency},
                         sharpness, gamma=0.05, phi=0.005, autocast=autocast, eta_grad=eta_grad)

    def adapler_step(sharpness: float, flush: bool, eta_grad: str = "full"):
        def run():
            torch.set_flush_denormal(flush)
            adapler_grads(sharpness, eta_grad)
            for o in (main_opt, eta_opt):
                o.step()
                o.zero_grad(set_to_none=True)
            torch.set_flush_denormal(True)
        return run

    def adapler_single_pass():  # the step without eta's own gradient pass and the optimisers: their cost
        model.train()
        with autocast():
            out = model(**inputs, mode="soft", sharpness=HARD_SHARPNESS)
        ce = torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"])
        kl = cp_kl_loss(out.cp_scores, saliency, inputs["attention_mask"], model.eta.detach(), HARD_SHARPNESS,
                        model.theta.detach() if model.theta is not None else None, model.config.soft_beta)
        (ce + 0.05 * kl).backward()
        model.zero_grad(set_to_none=True)

    def eta_gradient(sharpness: float, eta_grad: str) -> torch.Tensor:
        torch.manual_seed(0)  # same dropout masks for both modes
        adapler_grads(sharpness, eta_grad)
        grad = model.eta.grad.detach().clone()
        model.zero_grad(set_to_none=True)
        return grad

    stages = {
        "bare forward+backward": fwd_bwd(bare),
        "bare forward+backward, attention dropout 0.1": fwd_bwd(bare_dropout),
        "fine-tuning step (AdamW)": finetune_step,
        "saliency (gradient x input)": saliency_step,
        "AdapLeR step, start of schedule (sharpness 10)": adapler_step(10.0, True),
        "AdapLeR step, end of schedule (sharpness 1e5)": adapler_step(HARD_SHARPNESS, True),
        "AdapLeR step, end of schedule, denormals not flushed": adapler_step(HARD_SHARPNESS, False),
        "  of which: soft forward + one backward of CE + gamma*KL": adapler_single_pass,
        "AdapLeR step --eta-grad local, start of schedule": adapler_step(10.0, True, "local"),
        "AdapLeR step --eta-grad local, end of schedule": adapler_step(HARD_SHARPNESS, True, "local"),
    }
    torch.set_flush_denormal(True)
    for fn in stages.values():  # warm-up
        fn()
    times = {name: [] for name in stages}
    for _ in range(args.repeats):  # alternate the stages so that machine noise hits all alike
        for name, fn in stages.items():
            times[name].append(timed(fn))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"# {cpu}; torch {torch.__version__}; {args.threads} thread(s); batch {args.batch_size} x "
          f"{args.length} pieces; median of {args.repeats}; {'bf16 autocast' if args.bf16 else 'fp32'}")
    base = statistics.median(times["bare forward+backward"])
    print("| stage | s per step | x bare forward+backward |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} | {statistics.median(t) / base:.2f} |")
    print("\n| sharpness | eta gradient, local vs full: cosine | relative difference |\n|---|---|---|")
    for sharpness in (10.0, 1e3, HARD_SHARPNESS):
        full, local = (eta_gradient(sharpness, mode) for mode in ("full", "local"))
        cosine = torch.nn.functional.cosine_similarity(full, local, dim=0)
        print(f"| {sharpness:g} | {cosine:.4f} | {(local - full).norm() / full.norm():.4f} |")


if __name__ == "__main__":
    main()

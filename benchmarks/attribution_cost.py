"""Cost of Integrated Gradients and occlusion in the explorer, side by side with gradient x input.

One click of the Explore tab with the "Integrated Gradients / occlusion" box ticked
(``app.ui.run_analysis(..., slow=True)``) on a 64-token input, the engine's cache cleared before each
run; reported: median ms of each method's rationale (``Analysis.timings_ms``) and its model passes,
and the ratio to gradient x input measured in the same runs (target of the issue: Integrated
Gradients with 20 steps <= 1 s).

    pip install -e '.[app]'
    python benchmarks/attribution_cost.py [--model PATH] [--tokens 64] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

METHODS = ("adapler", "saliency", "attention", "attention_rollout", "integrated_gradients", "occlusion")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the first shipped model)")
    ap.add_argument("--tokens", type=int, default=64, help="input length in word pieces incl. [CLS]/[SEP]")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, as `python -m app --threads` (default 1)")
    args = ap.parse_args(argv)

    # Imported after parsing, so that --help does not load torch and Gradio.
    import torch
    from app_latency import text_of_pieces

    from app import analysis as A
    from app import ui

    torch.set_num_threads(args.threads)
    model = args.model or str(next(iter(A.shipped_models().values())))
    state = ui.AppState(model, data_dir=None)
    bundle = state.bundle(state.default_choice, None)
    text = text_of_pieces(bundle.tokenizer, args.tokens)
    ui.run_analysis(state, state.default_choice, None, text, 1.0, None, True)  # warm-up
    ms: dict[str, list[float]] = {m: [] for m in METHODS}
    totals, unpruned = [], []
    for _ in range(args.repeats):
        bundle.engine.cache.mem.clear()  # a new text: no cached pass
        a = ui.run_analysis(state, state.default_choice, None, text, 1.0, None, True)[-1]
        for m in METHODS:
            ms[m].append(a.timings_ms[f"method_{m}"] if m not in ("adapler", "saliency", "attention",
                                                                   "attention_rollout") else a.costs[m]["ms"])
        totals.append(a.timings_ms["total"])
        unpruned.append(a.speed["ms_unpruned"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {model}; {args.tokens} tokens; torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, "
          f"load average {load:.2f}; median of {args.repeats} runs")
    print("\n| method | forward passes | backward passes | median ms | x gradient x input | x unpruned forward |")
    print("|---|---|---|---|---|---|")
    sal, fwd = statistics.median(ms["saliency"]), statistics.median(unpruned)
    for m in METHODS:
        c = a.costs[m]
        med = statistics.median(ms[m])
        print(f"| {m} | {c['forward']:g} | {c['backward']:g} | {med:.0f} | {med / sal:.1f} | {med / fwd:.0f} |")
    print(f"\nunpruned forward (batch 1, timed by the analysis): {fwd:.1f} ms median; app_latency.py's machine "
          "reference: 7.3 ms on an idle 2-core machine with 2 threads")
    print(f"\nwhole analysis with both methods: {statistics.median(totals):.0f} ms median; Integrated Gradients "
          f"target <= 1000 ms: {'ok' if statistics.median(ms['integrated_gradients']) <= 1000 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

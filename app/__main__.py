"""``python -m app`` / ``adapler-explorer``: serve the rationale explorer (default http://127.0.0.1:7860).

The default model is the first shipped model of the repository checkout (``assets/models/``); an installed
package has no shipped models, so pass ``--model`` there. ``--dataset`` (with the column options of
``python -m adapler``) lists the examples of one split of your own data in the Explore tab."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

# The Hub is not reachable from many machines this runs on, and Gradio's analytics calls out at launch.
for _k, _v in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_k, _v)


# adapler.data.DataArgs fields the explorer takes (--data-dir is its own option; the model's windows set the length)
DATASET_OPTIONS = ("dataset", "dataset_config", "text_column", "text_pair_column", "label_column", "id_column")
DEFAULT_SPLIT = "test"
EXAMPLES_LISTED = 200  # the first examples of the split: a dropdown, not a browser for the whole dataset


def build_parser() -> argparse.ArgumentParser:
    # "python -m app" when run as a module, the console script's own name (adapler-explorer) otherwise
    prog = "python -m app" if os.path.basename(sys.argv[0]) == "__main__.py" else None
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860)")
    parser.add_argument("--model", default=None,
                        help="model folder (AdapLeR or BERT classifier); default: the first shipped model in the "
                             "repository's assets/models/ (required when the package is installed outside the repository)")
    parser.add_argument("--data-dir", default=None,
                        help="data folder (layout: docs/data.md), for dataset examples with human rationales "
                             "and the live ERASER evaluation (default: $ADAPLER_DATA_DIR)")
    parser.add_argument("--reports-dir", default=None,
                        help="folder of ERASER reports, one sub-folder per report as `python -m eraser_eval --out` writes "
                             "it, for the report tab (default: the repository's assets/reports/)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("ADAPLER_APP_THREADS", "1")),
                        help="torch intra-op threads (default 1: requests are served one model pass at a time, and on "
                             "a small shared CPU a second thread mostly waits; $ADAPLER_APP_THREADS)")
    parser.add_argument("--allow-local-paths", action="store_true",
                        help="let visitors load any model folder on this machine by its path ('Local path…' in the "
                             "model picker, the API's model argument); off by default, for a server open to the public")
    parser.add_argument("--max-models", type=int, default=int(os.environ.get("ADAPLER_MAX_MODELS", "3")),
                        help="models kept loaded at once; loading one more unloads the least recently used "
                             "(default 3; $ADAPLER_MAX_MODELS)")
    parser.add_argument("--no-preload", action="store_true", help="load the default model on first use, not at launch")
    add_dataset_options(parser)
    return parser


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    # the option names and help of `python -m adapler`; importing adapler loads torch and transformers,
    # so --help takes seconds rather than a blink
    from adapler.cli import DATA_HELP, SPLIT_HELP, add_dataclass_options
    from adapler.data import DataArgs

    group = parser.add_argument_group(
        "examples of your own dataset", f"the first {EXAMPLES_LISTED} examples of one split, listed in the "
        "Explore tab with their gold labels (the --model's class names)")
    helps = {**DATA_HELP, "dataset": "your own data, as in `python -m adapler`: a Hub dataset name, or a local "
             ".csv/.tsv/.json/.jsonl/.parquet file or a folder of them, one file per split; see docs/data.md"}
    add_dataclass_options(group, DataArgs, helps, only=DATASET_OPTIONS)
    group.add_argument("--split", default=None, help=f"split of --dataset to list: {SPLIT_HELP} "
                       f"(default: {DEFAULT_SPLIT})")


def dataset_option_error(args: argparse.Namespace) -> str | None:
    """A dataset option given without --dataset."""
    if args.dataset is not None:
        return None
    given = [name for name in (*DATASET_OPTIONS[1:], "split") if getattr(args, name) is not None]
    return f"--{given[0].replace('_', '-')} goes with --dataset" if given else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t0 = time.perf_counter()

    if args.model and not os.path.isdir(args.model):
        print(f"error: --model {args.model}: no such folder", file=sys.stderr)
        return 2
    if args.data_dir and not os.path.isdir(args.data_dir):
        print(f"error: --data-dir {args.data_dir}: no such folder", file=sys.stderr)
        return 2
    if args.max_models < 1:
        print(f"error: --max-models {args.max_models}: keep at least one model loaded", file=sys.stderr)
        return 2
    if args.reports_dir and not os.path.isdir(args.reports_dir):
        print(f"error: --reports-dir {args.reports_dir}: no such folder", file=sys.stderr)
        return 2
    if (problem := dataset_option_error(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    # Heavy imports after argument checks, so that --help and bad arguments answer at once.
    import threading

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    log = logging.getLogger("app")

    from . import analysis as A  # torch, transformers and the model code: after the argument checks

    A.MODELS.max_models = args.max_models

    # Load (and warm up) the default model while Gradio is imported: model loading is mostly torch
    # work that releases the GIL, so the two overlap on a 2-core machine.
    default = args.model or next(iter(A.shipped_models().values()), None)
    if default is None:
        print(f"error: no --model given and no shipped model in {A.MODELS_DIR} (shipped models come with the "
              "repository checkout, not with an installed package): pass --model PATH, an AdapLeR or BERT "
              "classifier folder", file=sys.stderr)
        return 2
    own_examples = None
    if args.dataset is not None:  # read before the model loads and Gradio starts: bad data ends here
        from adapler import data as D  # after the argument checks, as the other heavy imports

        try:
            source = D.DataArgs(**{name: getattr(args, name) for name in DATASET_OPTIONS}).source()
            own_examples = A.dataset_examples(source, args.split or DEFAULT_SPLIT, default, EXAMPLES_LISTED)
        except (D.DataError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        log.info("%d examples of %s (%s)", len(own_examples.examples), own_examples.name, own_examples.split)
    preload_error: list[BaseException] = []

    def preload():
        try:
            b = A.load_bundle(default)
            log.info("default model %s ready (%.1f s)", b.path, b.load_seconds)
        except BaseException as e:  # reported below; the page shows the same message on use
            preload_error.append(e)

    loader = threading.Thread(target=preload, name="preload") if default and not args.no_preload else None
    if loader is not None:
        loader.start()
    # Gradio is imported here, while the preload thread loads the model (the two overlap)
    from .ui import LOCAL_CHOICE, build_demo

    demo = build_demo(args.model, args.data_dir, reports_dir=args.reports_dir, allow_local_paths=args.allow_local_paths,
                      dataset_examples=own_examples)
    if args.allow_local_paths:
        log.warning("--allow-local-paths: visitors can load any model folder on this machine by its path")
    if loader is not None:
        loader.join()
        if preload_error:
            e = preload_error[0]
            log.warning("%s", e if isinstance(e, A.UserError) else f"preloading {default} failed: {e!r}")
    if demo.app_state.default_choice == LOCAL_CHOICE:
        log.warning("no shipped model in assets/models/ and no --model: the page asks for a model folder")
    log.info("ready in %.1f s, serving on http://%s:%d", time.perf_counter() - t0, args.host, args.port)
    demo.launch(server_name=args.host, server_port=args.port, footer_links=["api", "gradio"],
                show_error=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m adapler`` commands that also write this process's final in-memory weights (run by
tests/test_multiprocess.py under torchrun): ``python tests/ddp_worker.py DUMP_DIR CMD ARGS [:: CMD ARGS]``.

After each command every process writes ``DUMP_DIR/CMD-rank{i}.safetensors`` from the model it
trained (the one given to ``Accelerator.prepare``), which the main process alone would never save.
Several commands share one launch: starting the processes costs more than training the tiny model."""

import sys
from pathlib import Path

from accelerate import Accelerator
from safetensors.torch import save_file

from adapler.__main__ import main

prepared = []
_prepare = Accelerator.prepare


def remembering_prepare(self, *objects, **kwargs):
    out = _prepare(self, *objects, **kwargs)
    prepared.append((self, out[0]))
    return out


def commands(argv):
    current = []
    for arg in argv:
        if arg == "::":
            yield current
            current = []
        else:
            current.append(arg)
    yield current


if __name__ == "__main__":
    Accelerator.prepare = remembering_prepare
    for argv in commands(sys.argv[2:]):
        if main(argv) != 0:
            sys.exit(1)
        acc, model = prepared[-1]
        weights = {k: v.detach().contiguous() for k, v in acc.unwrap_model(model).state_dict().items()}
        save_file(weights, Path(sys.argv[1]) / f"{argv[0]}-rank{acc.process_index}.safetensors")

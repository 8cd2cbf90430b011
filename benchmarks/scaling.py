"""How the kernels' cost grows with prompts, IG steps, the patched layer and the first differing position.

The model of the cost (see benchmarks/README.md): a kernel's work is rows × positions ×
layers above, where rows = prompts × (components or IG steps), positions = those from the
first token where clean and corrupted differ, layers = those from the patched one up
(×3 for IG's backward pass). This script measures each factor on its own, on the
embedded model and an IOI batch, changing one thing at a time:

    .venv/bin/python benchmarks/scaling.py          # about 3 minutes on 2 cores
"""

from __future__ import annotations

import sys
import time

import torch

from ig_ap.ig import integrated_gradients
from ig_ap.models import load_model
from ig_ap.patching import activation_patching
from ig_ap.tasks import make_dataset


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    torch.manual_seed(0)
    model = load_model("smollm2-135m", device="cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    data = make_dataset("ioi", model, n=16, seed=0)
    batch8, batch4, batch16 = data.batch(range(8)), data.batch(range(4)), data.batch(range(16))
    L = model.cfg.n_layers // 2
    rows = []

    def ig(batch, steps, layer=L, **kw):
        return seconds(lambda: integrated_gradients(model, batch, components="heads", layers=[layer], n_steps=steps, progress=False, **kw))

    def ap(batch, layer=L, **kw):
        return seconds(lambda: activation_patching(model, batch, components="heads", layers=[layer], progress=False, **kw))

    ig(batch8, 4)  # warm up
    for steps in (25, 50, 100):
        rows.append(("IG heads, one layer", f"steps = {steps}", ig(batch8, steps)))
    for batch in (batch4, batch8, batch16):
        rows.append(("IG heads, one layer", f"prompts = {len(batch)}", ig(batch, 50)))
    for layer in (0, L, model.cfg.n_layers - 1):
        rows.append(("AP heads, one layer", f"layer = {layer} ({model.cfg.n_layers - layer} layers run)", ap(batch8, layer)))
    prefix = batch8.first_difference()
    width = batch8.clean.shape[1]
    rows.append(("AP heads, one layer", f"shared prefix on: {width - prefix} of {width} positions run", ap(batch8)))
    rows.append(("AP heads, one layer", f"shared prefix off: {width} of {width} positions run", ap(batch8, share_prefix=False)))

    print("| kernel | varied | seconds |")
    print("| --- | --- | --- |")
    for kernel, varied, s in rows:
        print(f"| {kernel} | {varied} | {s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wall time of a full run on the embedded model: IG and AP for all heads and all neurons, both directions.

8 IOI prompts, 50 Gauss-Legendre steps, CPU. IG (heads and neurons), AP of the heads and
AtP are run in full. AP of all 46,080 neurons takes about an hour per direction on 2
cores, so it is run on ``--neuron-layers`` and extrapolated to all layers with the cost
model of benchmarks/README.md (the time of a layer is proportional to the number of
layers from it up: seconds per neuron-layer is fitted on the measured layers).

    .venv/bin/python benchmarks/full_run.py        # about 25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ig_ap.atp import attribution_patching
from ig_ap.ig import integrated_gradients
from ig_ap.models import load_model
from ig_ap.patching import activation_patching
from ig_ap.tasks import make_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--neuron-layers", type=int, nargs="*", default=[24, 29])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load_model("smollm2-135m", device="cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    n_layers = model.cfg.n_layers
    batch = make_dataset("ioi", model, n=args.prompts, seed=0).batch()
    rows = []
    for direction in ("denoising", "noising"):
        result = integrated_gradients(model, batch, direction=direction, n_steps=args.steps, progress=False)
        worst = max(float(result.completeness[k]["relative"].max()) for k in ("heads", "neurons"))
        rows.append((f"IG {direction}, all heads and neurons, {args.steps} steps", result.seconds, "measured",
                     f"worst completeness error {worst:.1e} of the clean−corrupted gap"))
        result = activation_patching(model, batch, direction=direction, components="heads", progress=False)
        rows.append((f"AP {direction}, all heads", result.seconds, "measured", ""))
        per_layer = {}
        for layer in args.neuron_layers:
            t = time.perf_counter()
            activation_patching(model, batch, direction=direction, components="neurons", layers=[layer], progress=False)
            per_layer[layer] = time.perf_counter() - t
        unit = sum(per_layer.values()) / sum(n_layers - l for l in per_layer)  # seconds per (layer of neurons × layer run)
        total = unit * sum(n_layers - l for l in range(n_layers))
        rows.append((f"AP {direction}, all neurons", total, f"extrapolated from layers {args.neuron_layers}",
                     ", ".join(f"layer {l}: {s:.0f} s" for l, s in per_layer.items())))
        result = attribution_patching(model, batch, direction=direction)
        rows.append((f"AtP {direction}, all heads and neurons", result.seconds, "measured", ""))
    print(f"smollm2-135m, {args.prompts} IOI prompts ({tuple(batch.clean.shape)}, first difference at {batch.first_difference()}), CPU, {torch.get_num_threads()} threads")
    print("| run | wall time | how | note |")
    print("| --- | --- | --- | --- |")
    for what, s, how, note in rows:
        print(f"| {what} | {s / 60:.1f} min | {how} | {note} |")
    total = sum(s for _, s, _, _ in rows)
    print(f"| everything above | {total / 60:.1f} min | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Attribution patching (AtP): the first-order estimate of activation patching.

The idea (Nanda 2023; Syed et al. 2023): the effect of patching one component is, to
first order, the change of its activation times the gradient of the metric at the base
run::

    AtP_c = sum over its coordinates and positions of (source − base) · ∂metric/∂a |base run

One forward and one backward pass on the base run give the gradient at every head's
``hook_z`` and every neuron's ``hook_post`` at once (taken in the same backward pass, so
every path through later components is kept), and one forward pass on the source run
gives the activations. Directions and units are those of :func:`ig_ap.patching.activation_patching`:
AtP estimates metric(patched) − metric(base run). It equals integrated gradients with one
left-Riemann step in the baseline context (``integrated_gradients(..., n_steps=1,
method="riemann_left", context="baseline")``), which the tests check.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Sequence

import torch

from ig_ap.attribution import Attribution, empty_scores, hook_name, prepare
from ig_ap.replay import final_batch, trace
from ig_ap.tasks import Batch


def attribution_patching(
    model,
    batch: Batch,
    metric: Callable | None = None,
    direction: str = "denoising",
    components: str | Sequence[str] = ("heads", "neurons"),
    *,
    device: str | None = None,
    meta: dict | None = None,
) -> Attribution:
    """First-order estimate of AP for every head and neuron: one forward and backward pass.

    Arguments and result as :func:`ig_ap.patching.activation_patching`.
    """
    started = time.perf_counter()
    setup = prepare(model, batch, metric, direction, components, device)
    direction, components, info, device, metric, batch, _ = setup
    base_tokens, source_tokens = setup.runs()
    names = [hook_name(k, l) for l in range(info.n_layers) for k in components]
    source = trace(model, source_tokens, batch.last, names)

    kept: dict[str, torch.Tensor] = {}

    def keep(activation, hook, name):  # the name is bound here, not read from hook.name
        kept[name] = activation
        return activation

    def leaf(activation, hook):  # the graph starts here, whether or not the weights require grad
        return activation.detach().requires_grad_(True)

    hooks = [("hook_embed", leaf)] + [(n, functools.partial(keep, name=n)) for n in names]
    with torch.enable_grad():
        with model.hooks(fwd_hooks=hooks):
            logits = model(base_tokens, return_type="logits")
        values = metric(logits, batch)
        grads = torch.autograd.grad(values.sum(), [kept[n] for n in names])
    gradient = dict(zip(names, grads))
    base_metric = values.detach()
    source_metric = metric(source.final[:, None], final_batch(batch)).detach()
    clean_metric, corrupted_metric = (source_metric, base_metric) if direction == "denoising" else (base_metric, source_metric)

    P = len(batch)
    scores = {}
    for kind in components:
        size = info.n_heads if kind == "heads" else info.d_mlp
        out = empty_scores(P, info.n_layers, size)
        for layer in range(info.n_layers):
            name = hook_name(kind, layer)
            product = (source.cache[name] - kept[name].detach()) * gradient[name]
            out[:, layer] = product.sum(dim=(1, 3) if kind == "heads" else (1,)).float().cpu()
        scores[kind] = out
    return Attribution(
        method="attribution_patching",
        direction=direction,
        heads=scores.get("heads"),
        neurons=scores.get("neurons"),
        clean_metric=clean_metric.float().cpu(),
        corrupted_metric=corrupted_metric.float().cpu(),
        meta={"model": info.model_id, "task": getattr(batch.task, "value", batch.task), "n_prompts": P, **(meta or {})},
        seconds=time.perf_counter() - started,
    )

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
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ig_ap.attribution import Attribution, base_and_source, clean_and_corrupted, hook_name, prepare
from ig_ap.replay import MEMORY_MB, run_from, trace
from ig_ap.tasks import Batch


def _leaf(activation, hook):
    """The graph starts here, whether or not the weights require grad."""
    return activation.detach().requires_grad_(True)


def _keep(activation, hook, name, store):  # the name is bound here, not read from hook.name
    store[name] = activation
    return activation


def attribution_patching(
    model,
    batch: Batch,
    metric: Callable | None = None,
    direction: str = "denoising",
    components: str | Sequence[str] = ("heads", "neurons"),
    *,
    layers: Sequence[int] | None = None,
    internal_batch_size: int | None = None,
    memory_mb: float = MEMORY_MB,
    share_prefix: bool = True,
    device: str | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Attribution:
    """First-order estimate of AP for every head and neuron: one forward and backward pass.

    Arguments and result as :func:`ig_ap.patching.activation_patching`; here
    ``internal_batch_size`` is the number of prompts per forward and backward pass (each
    prompt is one row), and ``layers`` the layers whose components are scored (the pass
    always runs the whole model; the others are NaN).
    """
    setup = prepare(model, batch, metric, direction, components, layers=layers, internal_batch_size=internal_batch_size,
                    memory_mb=memory_mb, share_prefix=share_prefix, device=device, progress=progress, meta=meta)
    info, metric, batch = setup.info, setup.metric, setup.batch
    names = [hook_name(k, l) for l in setup.layers for k in setup.components]
    P = len(batch)
    rows = min(P, setup.rows_per_pass(model, batch.clean.shape[1], info.n_layers, True))  # prompts per pass
    setup.rows.append(rows)
    scores = {kind: setup.empty(kind) for kind in setup.components}
    base_metric, source_metric = torch.zeros(P), torch.zeros(P)
    prefixes = []
    for start in tqdm(range(0, P, rows), desc=f"AtP {setup.direction}", unit="pass", disable=not setup.progress):
        index = list(range(start, min(start + rows, P)))
        chunk = batch.select(index)
        base_tokens, source_tokens = base_and_source(setup.direction, chunk.clean, chunk.corrupted)
        prefix = chunk.first_difference() if setup.share_prefix else 0
        prefixes.append(prefix)
        with torch.no_grad():
            source = trace(model, source_tokens, chunk.last, names, prefix=prefix)
            base = trace(model, base_tokens, chunk.last, prefix=prefix)
        kept: dict[str, torch.Tensor] = {}
        hooks = [("blocks.0.hook_resid_pre", _leaf)] + [(n, functools.partial(_keep, name=n, store=kept)) for n in names]
        with torch.enable_grad():
            values = metric(run_from(model, base, 0, 1, hooks, last=chunk.last), chunk)
            grads = torch.autograd.grad(values.sum(), [kept[n] for n in names])
        base_metric[index] = values.detach().float().cpu()
        source_metric[index] = metric(source.final, chunk).float().cpu()
        for name, gradient in zip(names, grads):
            kind = "heads" if name.endswith("hook_z") else "neurons"
            layer = int(name.split(".")[1])
            product = (source.cache[name] - kept[name].detach()) * gradient  # positions after the prefix; before it, 0
            scores[kind][index, layer] = product.sum(dim=(1, 3) if kind == "heads" else (1,)).float().cpu()
    clean_metric, corrupted_metric = clean_and_corrupted(setup.direction, base_metric, source_metric)
    return setup.result("attribution_patching", scores, clean_metric, corrupted_metric, shared_prefix=min(prefixes))

"""Activation patching (AP) of every attention head and every MLP neuron, many per forward pass.

The idea: run the model on the *base* prompt, overwrite one component's activation at
every position with its value from the *source* prompt, and see how far the task metric
moves. The score of a component is metric(patched) − metric(base run), per prompt, in
the metric's units (``Attribution.normalized()`` divides it by metric(clean) −
metric(corrupted), the DESIGN's AP score). ``direction="denoising"`` patches clean
activations into the corrupted run, ``"noising"`` corrupted activations into the clean run.

It is exact (the tests compare it with TransformerLens's
``get_act_patch_attn_head_out_all_pos`` and with one neuron per forward pass) and fast:

- the layers below the patched one are computed once per prompt (:mod:`ig_ap.replay`),
  not once per component;
- one pass patches many components: the batch carries ``component × prompt`` rows, and
  row ``c * P + p`` has component ``c`` patched on prompt ``p``;
- positions before the first one where clean and corrupted differ have the same
  activations in both runs, so patching them is a no-op: they are run once, and the
  patched passes see only the positions after them, reading the prefix's keys and values
  from a cache (``share_prefix``);
- the unembedding is computed at each prompt's last token only;
- the number of rows per pass is ``internal_batch_size``, by default what fits
  ``memory_mb``;
- neurons can be restricted to a subset per layer (``neurons=``), e.g. the top-k of
  another method's scores (:func:`top_neurons`), for CPU runs where all would be too slow.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ig_ap.attribution import Attribution, Setup, clean_and_corrupted, hook_name, prepare
from ig_ap.replay import MEMORY_MB, Trace, run_from, trace
from ig_ap.tasks import Batch


def _patch_slices(activation, hook, source, indices, n_prompts):
    """Row block ``j`` (prompts ``j*P … (j+1)*P``) gets component ``indices[j]`` from ``source``."""
    patched = activation.clone()
    for j, index in enumerate(indices):
        patched[j * n_prompts:(j + 1) * n_prompts, :, index] = source[:, :, index]
    return patched


def resolve_neurons(neurons, n_layers: int, d_mlp: int, layers: Sequence[int]) -> dict[int, Tensor]:
    """Which neurons of each layer to patch: ``None`` (all), ``{layer: indices}`` or a ``[layer, k]`` tensor."""
    if neurons is None:
        return {l: torch.arange(d_mlp) for l in layers}
    if isinstance(neurons, Mapping):
        chosen = {int(l): torch.as_tensor(v, dtype=torch.long).flatten() for l, v in neurons.items()}
    elif torch.is_tensor(neurons) and neurons.dim() == 2 and neurons.shape[0] == n_layers:
        chosen = {l: neurons[l].long() for l in range(n_layers)}
    else:
        raise ValueError("neurons must be None (all), a dict {layer: indices} or a [layer, k] index tensor")
    for l, idx in chosen.items():
        if not 0 <= l < n_layers or (len(idx) and (idx.min() < 0 or idx.max() >= d_mlp)):
            raise ValueError(f"neuron subset out of range: layer {l}, indices must lie in [0, {d_mlp})")
    return {l: chosen.get(l, torch.zeros(0, dtype=torch.long)) for l in layers}


def top_neurons(scores: Float[Tensor, "prompt layer neuron"], k: int) -> Int[Tensor, "layer k"]:
    """Per layer, the ``k`` neurons with the largest mean |score| over prompts (NaN counted as 0)."""
    magnitude = scores.abs().nan_to_num(0.0).mean(dim=0)
    return magnitude.topk(min(k, magnitude.shape[1]), dim=1).indices


def activation_patching(
    model,
    batch: Batch,
    metric: Callable | None = None,
    direction: str = "denoising",
    components: str | Sequence[str] = ("heads", "neurons"),
    *,
    neurons=None,
    layers: Sequence[int] | None = None,
    internal_batch_size: int | None = None,
    memory_mb: float = MEMORY_MB,
    share_prefix: bool = True,
    device: str | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Attribution:
    """Patch every head (at ``hook_z``) and every neuron (at ``mlp.hook_post``) at all positions.

    Args:
        model: a bridge from :func:`ig_ap.models.load_model`.
        batch: prompt pairs (:class:`ig_ap.tasks.Batch`).
        metric: ``metric(last-token logits [..., prompt, vocab], batch) -> [..., prompt]``; the task's by default.
        direction: ``"denoising"`` (clean into the corrupted run) or ``"noising"`` (corrupted into clean).
        components: ``"heads"``, ``"neurons"`` or both.
        neurons: a subset of neurons per layer (see :func:`resolve_neurons`); the rest are NaN.
        layers: which layers to patch (all by default); the others are NaN.
        internal_batch_size: rows (component × prompt) per forward pass; by default what
            fits ``memory_mb``.
        share_prefix: run the positions before the first one where clean and corrupted
            differ once, through a key/value cache (patching them is a no-op).
        device: where to compute (the model's device by default).
        progress: show a progress bar over components.
        meta: extra fields for the result's metadata.

    Returns:
        :class:`~ig_ap.attribution.Attribution` with ``metric(patched) − metric(base run)``.
    """
    setup = prepare(model, batch, metric, direction, components, layers=layers, internal_batch_size=internal_batch_size,
                    memory_mb=memory_mb, share_prefix=share_prefix, device=device, progress=progress, meta=meta)
    neuron_sets = resolve_neurons(neurons, setup.info.n_layers, setup.info.d_mlp, setup.layers) if "neurons" in setup.components else {}
    prefix = setup.batch.first_difference() if setup.share_prefix else 0
    with torch.no_grad():
        base, source = _trace_runs(model, setup, prefix)
        base_metric = setup.metric(base.final, setup.batch)
        source_metric = setup.metric(source.final, setup.batch)
        scores = _patch_every_component(model, setup, base, source, base_metric, _jobs(setup, neuron_sets), prefix)
    clean_metric, corrupted_metric = clean_and_corrupted(setup.direction, base_metric, source_metric)
    return setup.result("activation_patching", scores, clean_metric, corrupted_metric, shared_prefix=prefix,
                        neurons="all" if neurons is None else "subset")


def _trace_runs(model, setup: Setup, prefix: int) -> tuple[Trace, Trace]:
    """The base run (block inputs, for :func:`~ig_ap.replay.run_from`) and the source run (the activations patched in)."""
    base_tokens, source_tokens = setup.runs()
    names = [hook_name(k, l) for l in setup.layers for k in setup.components]
    source = trace(model, source_tokens, setup.batch.last, names, prefix=prefix)
    base = trace(model, base_tokens, setup.batch.last, prefix=prefix)
    return base, source


def _jobs(setup: Setup, neuron_sets: dict[int, Tensor]) -> list[tuple[str, int, Tensor]]:
    """(kind, layer, component indices) for every layer and kind to patch, in the order they run."""
    jobs = []
    for layer in setup.layers:
        if "heads" in setup.components:
            jobs.append(("heads", layer, torch.arange(setup.info.n_heads)))
        if "neurons" in setup.components and len(neuron_sets[layer]):
            jobs.append(("neurons", layer, neuron_sets[layer]))
    return jobs


def _patch_every_component(model, setup: Setup, base: Trace, source: Trace, base_metric: Tensor,
                           jobs: list[tuple[str, int, Tensor]], prefix: int) -> dict[str, Tensor]:
    """metric(patched) − metric(base run) of every component of ``jobs``, many components per pass."""
    batch, P = setup.batch, len(setup.batch)
    scores = {kind: setup.empty(kind) for kind in setup.components}
    bar = tqdm(total=sum(len(idx) for _, _, idx in jobs), desc=f"AP {setup.direction}", unit="component",
               disable=not setup.progress)
    for kind, layer, indices in jobs:
        per_pass = setup.copies_per_pass(model, batch.clean.shape[1] - prefix, setup.info.n_layers - layer, False)
        name = hook_name(kind, layer)
        for start in range(0, len(indices), per_pass):
            chunk = indices[start:start + per_pass].tolist()
            hook = functools.partial(_patch_slices, source=source.cache[name], indices=chunk, n_prompts=P)
            final = run_from(model, base, layer, len(chunk), [(name, hook)], last=batch.last)
            moved = setup.metric(final.view(len(chunk), P, -1), batch) - base_metric
            scores[kind][:, layer, chunk] = moved.T.float().cpu()
            bar.update(len(chunk))
    bar.close()
    return scores

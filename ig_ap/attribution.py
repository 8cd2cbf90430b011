"""The result every attribution kernel returns, and the conventions they share.

Directions (named once, for every method):

- ``"denoising"``: clean activations go into the corrupted run (tests sufficiency; finds
  OR components). AP: the base run is the corrupted one. IG: baseline corrupted, input
  clean.
- ``"noising"``: corrupted activations go into the clean run (tests necessity; finds AND
  components). AP: the base run is the clean one. IG: baseline clean, input corrupted.

The original research notebooks called these "corrupt→clean" (denoising) and
"clean→corrupt" (noising).

Components: ``"heads"`` (each attention head's output, patched at ``hook_z`` at every
position) and ``"neurons"`` (``mlp.hook_post`` of every MLP neuron at every position).
Scores are per prompt: heads ``[prompt, layer, head]``, neurons ``[prompt, layer, d_mlp]``,
in the metric's own units (:meth:`Attribution.normalized` divides by
metric(clean) − metric(corrupted), prompt by prompt). Whatever a kernel did not compute
(layers left out with ``layers=``, neurons outside a subset) is NaN, never 0, so that
statistics drop it instead of counting it as "no effect".

Metrics: ``metric(final, batch)`` takes each prompt's last-token logits ``[..., prompt,
vocab]`` (leading dimensions broadcast) and returns ``[..., prompt]``; ``batch.score(logits)``
serves callers that hold full logits ``[prompt, pos, vocab]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ig_ap.models import model_info
from ig_ap.replay import MEMORY_MB, copies_per_pass, rows_per_pass

DIRECTIONS = ("denoising", "noising")
COMPONENTS = ("heads", "neurons")
HOOKS = {"heads": "blocks.{}.attn.hook_z", "neurons": "blocks.{}.mlp.hook_post"}
"""Where each component kind is read and patched (all positions)."""


SPEED_OPTIONS = ("progress", "internal_batch_size", "memory_mb", "device")
"""Options that change how fast a computation runs, never its numbers: left out of every results key
(:mod:`ig_ap.results`), set by a sweep rather than by its methods (:mod:`ig_ap.sweep`), and set once per
chapter (:class:`ig_ap.book.Chapter`)."""


def hook_name(kind: str, layer: int) -> str:
    """The hook point of ``kind`` (``"heads"`` or ``"neurons"``) at ``layer``."""
    return HOOKS[kind].format(layer)


class AttributionError(ValueError):
    """Arguments an attribution kernel cannot work with."""


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise AttributionError(
            f"unknown direction {direction!r}; use 'denoising' (clean into corrupted, the old 'corrupt→clean') "
            f"or 'noising' (corrupted into clean, the old 'clean→corrupt')"
        )
    return direction


def base_and_source(direction: str, clean, corrupted):
    """(the base run's, the source run's) of a pair given as (clean's, corrupted's): tokens, traces or metrics.

    ``"denoising"``: the base run is the corrupted one and the source the clean one;
    ``"noising"``: the reverse. The one place the two directions are told apart.
    """
    return (corrupted, clean) if check_direction(direction) == "denoising" else (clean, corrupted)


def clean_and_corrupted(direction: str, base, source):
    """The inverse of :func:`base_and_source`: (clean's, corrupted's) of a pair given as (base run's, source run's)."""
    return (source, base) if check_direction(direction) == "denoising" else (base, source)


def check_components(components: str | Sequence[str]) -> tuple[str, ...]:
    components = (components,) if isinstance(components, str) else tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise AttributionError(f"unknown component kind(s) {unknown or components}; use 'heads' and/or 'neurons'")
    return components


def check_batch(batch) -> None:
    if batch.clean.shape != batch.corrupted.shape:
        raise AttributionError(
            f"clean and corrupted prompts differ in shape {tuple(batch.clean.shape)} vs "
            f"{tuple(batch.corrupted.shape)}; each pair must tokenize to the same length"
        )


@dataclass
class Setup:
    """A kernel's checked arguments, the options every kernel shares, and the result it builds.

    Every kernel takes the same keywords with the same meaning: ``layers`` (which layers to
    attribute; the others are NaN), ``internal_batch_size`` (rows per forward pass: component
    × prompt for AP, step × prompt for IG, prompts for AtP; by default what fits
    ``memory_mb``), ``memory_mb``, ``share_prefix``, ``device``, ``progress`` and ``meta``
    (extra fields for the result's metadata).
    """

    direction: str
    components: tuple[str, ...]
    info: Any  # ig_ap.models.ModelInfo
    device: str
    metric: Callable
    batch: Any  # ig_ap.tasks.Batch, on ``device``
    layers: list[int]
    internal_batch_size: int | None = None
    memory_mb: float = MEMORY_MB
    share_prefix: bool = True
    progress: bool = True
    meta: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    rows: list[int] = field(default_factory=list)  # rows of every pass run, for the metadata

    def runs(self):
        """(tokens of the run patched into / the IG baseline, tokens of the other run)."""
        return base_and_source(self.direction, self.batch.clean, self.batch.corrupted)

    def rows_per_pass(self, model, n_positions: int, n_layers: int, grad: bool) -> int:
        """Rows one pass may hold: ``internal_batch_size`` if given, else what fits ``memory_mb`` over ``n_layers`` layers."""
        return self.internal_batch_size or rows_per_pass(model, n_positions, n_layers, grad, self.memory_mb)

    def copies_per_pass(self, model, n_positions: int, n_layers: int, grad: bool) -> int:
        """Copies of the batch (components, or points of the IG path) one pass holds: at least one.

        The rows this gives (copies × prompts) are recorded in the result's ``rows_per_pass``.
        """
        copies = copies_per_pass(model, len(self.batch), n_positions, n_layers, grad, self.memory_mb, self.internal_batch_size)
        self.rows.append(copies * len(self.batch))
        return copies

    def empty(self, kind: str) -> Float[Tensor, "prompt layer component"]:
        """Scores of ``kind`` for every prompt, layer and component, NaN until computed."""
        size = self.info.n_heads if kind == "heads" else self.info.d_mlp
        return torch.full((len(self.batch), self.info.n_layers, size), float("nan"), dtype=torch.float32)

    def result(self, method: str, scores: dict[str, Tensor], clean_metric: Tensor, corrupted_metric: Tensor, /,
               completeness=None, path_profile=None, **meta: Any) -> "Attribution":
        """The :class:`Attribution` of this run, with the metadata every kernel records and ``meta``."""
        return Attribution(
            method=method,
            direction=self.direction,
            heads=scores.get("heads"),
            neurons=scores.get("neurons"),
            clean_metric=clean_metric.detach().float().cpu(),
            corrupted_metric=corrupted_metric.detach().float().cpu(),
            meta={"model": self.info.model_id, "task": getattr(self.batch.task, "value", self.batch.task),
                  "n_prompts": len(self.batch), "layers": self.layers, "components": list(self.components),
                  "rows_per_pass": max(self.rows, default=None), **meta, **self.meta},
            completeness=completeness,
            path_profile=path_profile,
            seconds=time.perf_counter() - self.started,
        )


def prepare(model, batch, metric, direction, components, *, layers=None, internal_batch_size=None, memory_mb=MEMORY_MB,
            share_prefix=True, device=None, progress=True, meta=None) -> Setup:
    """Check what every kernel takes, before any computation; put the batch on the device."""
    direction = check_direction(direction)
    components = check_components(components)
    check_batch(batch)
    info = model_info(model)
    if layers is None:
        layers = list(range(info.n_layers))
    else:
        layers = list(layers)
        bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < info.n_layers]
        if bad:
            raise AttributionError(f"layers {bad} are not layers of this model (0 … {info.n_layers - 1})")
    if internal_batch_size is not None and (isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int)
                                            or internal_batch_size < 1):
        raise AttributionError(f"internal_batch_size must be a positive int (rows per pass) or None, got {internal_batch_size!r}")
    memory_mb = check_memory(memory_mb)
    device = device or info.device
    return Setup(direction, components, info, device, metric or batch.metric, batch.to(device), layers,
                 internal_batch_size, memory_mb, bool(share_prefix), bool(progress), dict(meta or {}))


def check_memory(memory_mb) -> float:
    """``memory_mb`` checked (a positive number; ``None``: :data:`~ig_ap.replay.MEMORY_MB`)."""
    if memory_mb is None:
        return MEMORY_MB
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, (int, float)) or memory_mb <= 0:
        raise AttributionError(f"memory_mb must be a positive number, got {memory_mb!r}")
    return memory_mb


@dataclass
class Attribution:
    """Per-prompt scores of every head and neuron, with what produced them."""

    method: str  # "activation_patching", "integrated_gradients", "attribution_patching"
    direction: str
    heads: Float[Tensor, "prompt layer head"] | None
    neurons: Float[Tensor, "prompt layer neuron"] | None
    clean_metric: Float[Tensor, "prompt"]
    corrupted_metric: Float[Tensor, "prompt"]
    meta: dict[str, Any] = field(default_factory=dict)
    # IG only: per layer, F(input) − F(baseline) along the path and |sum of attributions − it|
    completeness: dict[str, dict[str, Tensor]] | None = None
    # IG only: attribution accumulated over segments of alpha, [prompt, layer, component, segment]
    path_profile: dict[str, Tensor] | None = None
    seconds: float = 0.0

    def __getitem__(self, kind: str) -> Tensor:
        value = getattr(self, check_components(kind)[0])
        if value is None:
            raise KeyError(f"this attribution has no {kind}")
        return value

    @property
    def n_prompts(self) -> int:
        return self.clean_metric.shape[0]

    @property
    def denominator(self) -> Float[Tensor, "prompt"]:
        """metric(clean) − metric(corrupted) per prompt."""
        return self.clean_metric - self.corrupted_metric

    def normalized(self) -> "Attribution":
        """Scores divided by metric(clean) − metric(corrupted) of their prompt (DESIGN's AP score)."""
        d = self.denominator[:, None, None]
        return replace(
            self,
            heads=None if self.heads is None else self.heads / d,
            neurons=None if self.neurons is None else self.neurons / d,
            meta={**self.meta, "normalized": True},
        )

    def mean(self, kind: str) -> Tensor:
        """Mean over prompts ``[layer, component]`` (NaN where not computed)."""
        return self[kind].mean(dim=0)

    def share(self, kind: str) -> Float[Tensor, "layer component"]:
        """Mean score over prompts divided by the mean clean−corrupted gap: each component's share of the gap.

        The ratio of means, unlike the mean of :meth:`normalized`, stays finite when one
        prompt's own gap is near zero; the chapters' maps and tables use it.
        """
        return self.mean(kind) / self.denominator.mean()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(getattr(self, k).shape)}" for k in COMPONENTS if getattr(self, k) is not None)
        return f"Attribution({self.method}, {self.direction}, {shapes}, {self.seconds:.1f} s)"

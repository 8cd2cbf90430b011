"""Head mechanics: patching sets of heads, direct logit attribution, path patching, attention readout.

How a set of heads behaves when patched as a whole, how much each head writes directly
into the answer, and through which paths a head's effect flows. What these measurements
mean for one task (the IOI circuit's name movers, backups, S-inhibition heads, copy
suppression) is read in :mod:`ig_ap.ioi`.

Every patch is in the denoising frame: the base run is the corrupted prompt and patched
heads take values derived from the clean one. A patch gives the metric per prompt
(:class:`~ig_ap.analysis.Patched`); its effect is stated as a **share of the
clean−corrupted gap, a ratio of means**: (mean metric − mean metric(corrupted)) / (mean
metric(clean) − mean metric(corrupted)), with a 95% interval over prompts (:func:`ig_ap.analysis.ratio_of_means`)
(:func:`ig_ap.analysis.ratio_of_means`). That is the one rule of this module and of the book.

- :func:`patch_heads`: a set patched in one of :data:`MODES`:

  - ``"jointly"``: each head gets its clean output;
  - ``"linear_combination"``: each head gets its corrupted output plus the set's *mean*
    clean−corrupted output, at ``hook_result`` (``z @ W_O[h]``). The set's total output
    equals the joint patch's, spread evenly over its heads and so over their layers; a
    set of one head is exactly that head's patch;
  - ``"notebook_combination"``: the original notebook's ``get_lin_comb_cache``: each head's
    ``z`` (at ``hook_z``) gets its *clean* value plus the set's mean clean−corrupted ``z``,
    averaging ``z`` across heads whose ``W_O`` differ. Each head moves by Δ_h + mean Δ from
    its corrupted value, about twice its own Δ: a set of one head is patched to
    corrupted + 2Δ. It is kept to explain the notebook's numbers, not as a definition.

  :func:`set_effects` adds the sum of one-head patches and each way's fraction of the joint effect.
- :func:`direct_logit_attribution`: every head's output at the last token, through the final
  norm's scale (of the same run, frozen) and ``W_U``, onto the answer direction
  ``W_U[:, answer] − W_U[:, distractor]``; with the embeddings, the MLPs, the attention
  biases and the final biases, the terms add up to the logit difference exactly.
- :func:`attention_readout`: attention from the last token to the indirect object and the subject.
- :func:`path_patching`: the effect of a sender head's clean output on a receiver head's
  query, key or value input alone, every other head and MLP frozen at the corrupted run;
  :func:`mlp_paths`: a head's effect split into its direct path and its paths through each
  later MLP.

Every function runs its patched copies of the batch through :func:`run_patches`: the
base run replayed from its trace (:mod:`ig_ap.replay`), several patches per pass, as
many as fit ``memory_mb`` (:func:`ig_ap.replay.copies_per_pass`, the kernels' rule).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ig_ap.analysis import Interval, Patched, ratio_of_means
from ig_ap.attribution import AttributionError
from ig_ap.models import model_info
from ig_ap.replay import Trace, copies_per_pass, run_from, trace
from ig_ap.tasks import Batch, Task, final_logits

Head = tuple[int, int]

MODES = ("jointly", "linear_combination", "notebook_combination")
INPUTS = ("q", "k", "v")
MIN_JOINT_SHARE = 0.05
"""A fraction of the joint effect is undefined (NaN) when the joint effect is under this share of the gap."""


def result_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_result"


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def head_name(head: Head) -> str:
    """``(9, 6)`` as ``"L9H6"``, the book's way of writing a head."""
    return f"L{head[0]}H{head[1]}"


def head_mask(model, heads: Sequence[Head]) -> Bool[Tensor, "layer head"]:
    """The ``[layer, head]`` mask of ``heads`` (the form :func:`ig_ap.ablation.faithfulness` keeps)."""
    info = model_info(model)
    mask = torch.zeros(info.n_layers, info.n_heads, dtype=torch.bool)
    for layer, head in check_heads(model, heads):
        mask[layer, head] = True
    return mask


def check_heads(model, heads: Sequence[Head], what: str = "heads") -> list[Head]:
    """The heads as (layer, head) tuples; one clear line if one is out of range or the set is empty."""
    info = model_info(model)
    out = []
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise AttributionError(f"{what}: {item!r} is not a (layer, head) pair") from None
        if not (0 <= layer < info.n_layers and 0 <= head < info.n_heads):
            raise AttributionError(
                f"{what}: head L{layer}H{head} does not exist in {info.model_id} ({info.n_layers} layers × {info.n_heads} heads)"
            )
        out.append((layer, head))
    if not out:
        raise AttributionError(f"{what}: the set is empty")
    return list(dict.fromkeys(out))


def parse_heads(text: str) -> list[Head]:
    """Heads written as ``"L9H6, L10H7"`` or ``"9.6 10.7"``; :class:`AttributionError` in one line if malformed."""
    heads = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        match = re.fullmatch(r"(?:[Ll](\d+)[Hh](\d+))|(?:(\d+)\.(\d+))", item)
        if not match:
            raise AttributionError(f"cannot read head {item!r}; write heads as L9H6 or 9.6, separated by commas or spaces")
        layer, head = (int(g) for g in match.groups() if g is not None)
        heads.append((layer, head))
    return heads


def upstream_heads(model, heads: Sequence[Head], n_layers: int | None = None) -> list[Head]:
    """Every head in a layer below the earliest of ``heads`` (in the ``n_layers`` layers just below it, if given):
    the possible senders into all of them."""
    heads = check_heads(model, heads)
    first = min(l for l, _ in heads)
    start = 0 if n_layers is None else max(0, first - n_layers)
    return [(l, h) for l in range(start, first) for h in range(model_info(model).n_heads)]


def ranked_heads(scores: Float[Tensor, "layer head"], descending: bool = True) -> list[Head]:
    """Every head, ordered by ``scores`` (largest first, or smallest first with ``descending=False``)."""
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in scores.flatten().argsort(descending=descending)]


def at_last(t: Tensor, last: Tensor) -> Tensor:
    """Each prompt's row at its own last position."""
    return t[torch.arange(len(last)), last.to(t.device)]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise AttributionError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")


# --------------------------------------------------------------------------- patched runs


@dataclass(frozen=True)
class Runs:
    """The traced clean and corrupted runs of a batch (the activations asked for, and what replays them) and their metrics."""

    clean_run: Trace
    corrupted_run: Trace
    m_clean: Float[Tensor, "prompt"]
    m_corrupted: Float[Tensor, "prompt"]

    @property
    def clean(self) -> dict[str, Tensor]:
        return self.clean_run.cache

    @property
    def corrupted(self) -> dict[str, Tensor]:
        return self.corrupted_run.cache

    @property
    def base(self) -> Trace:
        """The run every head patch is made in (the denoising frame): the corrupted one."""
        return self.corrupted_run


def clean_and_corrupted_runs(model, batch: Batch, names: Sequence[str]) -> Runs:
    """Trace the clean and the corrupted prompts once, keeping the activations ``names``."""
    clean = trace(model, batch.clean, batch.last, sorted(set(names)))
    corrupted = trace(model, batch.corrupted, batch.last, sorted(set(names)))
    with torch.no_grad():
        return Runs(clean, corrupted, batch.metric(clean.final, batch), batch.metric(corrupted.final, batch))


FINAL_SCALE = "ln_final.hook_scale"
"""The final norm's scale, read by direct logit attribution; run after the blocks, so recording it needs every position."""

Patch = dict[str, dict[int | None, Tensor]]
"""What one patched run writes: hook name → head index (``None``: the whole activation, written first) → value ``[prompt, pos, ...]``."""


def run_patches(model, batch: Batch, base: Trace, patches: Sequence[Patch], record: Sequence[str] = (),
                memory_mb: float | None = None) -> tuple[Float[Tensor, "patch prompt"], dict[str, Tensor]]:
    """The base run (``base``, a trace of ``batch.corrupted`` or ``batch.clean``) under each of ``patches``.

    Copy ``j`` of a pass holds rows ``j·n … (j+1)·n``; each copy's hooks write its own
    patch, and the metric is read per copy. As many copies go into one pass as fit
    ``memory_mb`` (:func:`~ig_ap.replay.copies_per_pass`). Returns the metric ``[patch,
    prompt]`` and the activations named in ``record`` as ``{name: [patch, prompt, ...]}``,
    as they were in each patched run.
    """
    n = len(batch)
    per_pass = copies_per_pass(model, n, batch.clean.shape[1], len(model.blocks), False, memory_mb)
    names = sorted({name for patch in patches for name in patch} | set(record))
    metrics: list[Tensor] = []
    records: dict[str, list[Tensor]] = {name: [] for name in record}
    for start in range(0, len(patches), per_pass):
        chunk = patches[start:start + per_pass]
        k = len(chunk)
        store: dict[str, Tensor] = {}
        hooks = [(name, functools.partial(_write_patches, name=name, chunk=chunk, n=n, store=store if name in records else None))
                 for name in names]
        with torch.no_grad():
            if FINAL_SCALE in record:  # the final norm at every position: unembed them all, read the last token
                final = final_logits(run_from(model, base, 0, k, hooks), batch.last.repeat(k))
            else:  # the blocks' activations are recorded at every position either way
                final = run_from(model, base, 0, k, hooks, last=batch.last)
            metrics.append(batch.metric(final.view(k, n, -1), batch).cpu())
        for name in record:
            records[name].append(store[name].view(k, n, *store[name].shape[1:]))
    return torch.cat(metrics), {name: torch.cat(v) for name, v in records.items()}


def _write_patches(activation, hook, name, chunk, n, store):
    """Write each copy's patch of hook ``name`` into its rows; keep the result in ``store`` if asked (the name is bound
    here: ``hook.name`` may be an alias's target)."""
    if any(name in patch for patch in chunk):
        activation = activation.clone()
        for j, patch in enumerate(chunk):
            rows = slice(j * n, (j + 1) * n)
            for index, value in patch.get(name, {}).items():
                if index is None:
                    activation[rows] = value
                else:
                    activation[rows, :, index] = value
    if store is not None:
        store[name] = activation.detach().clone()
    return activation


# --------------------------------------------------------------------------- head sets


def _hook_names(heads: Sequence[Head], mode: str) -> list[str]:
    """The hooks a patch of ``heads`` in ``mode`` writes: ``hook_z`` for the notebook's combination, else ``hook_result``."""
    hook = z_hook if mode == "notebook_combination" else result_hook
    return sorted({hook(l) for l, _ in heads})


def _set_values(heads: Sequence[Head], clean, corrupted, mode: str) -> Patch:
    """Per hook name, per head index: the value the head takes under ``mode`` (see the module doc)."""
    _check_mode(mode)
    hook = z_hook if mode == "notebook_combination" else result_hook
    values: dict[str, dict[int, Tensor]] = {}
    if mode == "jointly":
        for l, h in heads:
            values.setdefault(hook(l), {})[h] = clean[hook(l)][:, :, h]
        return values
    delta = torch.stack([clean[hook(l)][:, :, h] - corrupted[hook(l)][:, :, h] for l, h in heads]).mean(0)
    start = clean if mode == "notebook_combination" else corrupted  # the notebook starts from the clean cache
    for l, h in heads:
        values.setdefault(hook(l), {})[h] = start[hook(l)][:, :, h] + delta
    return values


def patch_heads(model, batch: Batch, heads: Sequence[Head], mode: str = "jointly", memory_mb: float | None = None) -> Patched:
    """The metric of the corrupted run with ``heads`` patched together in ``mode`` (see the module doc), per prompt."""
    heads = check_heads(model, heads)
    _check_mode(mode)
    runs = clean_and_corrupted_runs(model, batch, _hook_names(heads, mode))
    metric, _ = run_patches(model, batch, runs.base, [_set_values(heads, runs.clean, runs.corrupted, mode)], memory_mb=memory_mb)
    return Patched(metric[0], runs.m_clean.cpu(), runs.m_corrupted.cpu())


WAYS = ("one by one (summed)", "jointly", "linear combination", "notebook's combination")
"""The ways :func:`set_effects` patches a set: one head at a time (effects summed), then :data:`MODES` in order."""


@dataclass(frozen=True)
class SetEffects:
    """One head set's effects per prompt under each of :data:`WAYS`, and the gap: shares and fractions by the ratio of means."""

    heads: list[Head]
    effects: Float[Tensor, "way prompt"]  # metric − metric(corrupted), in WAYS order
    gap: Float[Tensor, "prompt"]  # metric(clean) − metric(corrupted)

    def share(self, way: str, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """The effect of ``way`` as a share of the gap, with its 95% interval (:func:`~ig_ap.analysis.ratio_of_means`)."""
        return ratio_of_means(self.effects[WAYS.index(way)], self.gap, n_resamples, seed)

    def fraction(self, way: str, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """The effect of ``way`` over the joint patch's (ratio of means, interval over prompts); NaN when the joint
        effect is under :data:`MIN_JOINT_SHARE` of the gap, where a ratio would say nothing."""
        if abs(self.effects[WAYS.index("jointly")].mean() / self.gap.mean()) < MIN_JOINT_SHARE:
            return Interval(math.nan, math.nan, math.nan, self.effects.shape[1])
        return ratio_of_means(self.effects[WAYS.index(way)], self.effects[WAYS.index("jointly")], n_resamples, seed)

    def additivity(self, n_resamples: int = 1000, seed: int = 0) -> str:
        """Whether the set does more or less together than its members one by one, in words, from the 95% interval of
        the one-by-one sum over the joint effect (:meth:`fraction`)."""
        ratio = self.fraction("one by one (summed)", n_resamples, seed)
        if math.isnan(ratio.value) or math.isnan(ratio.low):
            return "undefined"
        if ratio.high < 1:
            return "the set does more together than its members add up to"
        if ratio.low > 1:
            return "the set does less together than its members add up to"
        return "the prompts cannot tell the joint patch from the sum of its members"

    def select(self, prompts: Tensor) -> "SetEffects":
        """Only the prompts ``prompts`` picks (a boolean mask or indices), e.g. those the model solves."""
        return SetEffects(self.heads, self.effects[:, prompts], self.gap[prompts])

    def to_dict(self) -> dict[str, Tensor]:
        return {"heads": torch.tensor(self.heads, dtype=torch.long).view(-1, 2), "effects": self.effects, "gap": self.gap}

    @classmethod
    def from_dict(cls, value: dict[str, Tensor]) -> "SetEffects":
        return cls([tuple(h) for h in value["heads"].tolist()], value["effects"], value["gap"])


def set_effects(model, batch: Batch, heads: Sequence[Head], memory_mb: float | None = None) -> SetEffects:
    """Patch ``heads`` one by one (effects summed per prompt), and together in each of :data:`MODES`."""
    heads = check_heads(model, heads)
    runs = clean_and_corrupted_runs(model, batch, _hook_names(heads, "jointly") + _hook_names(heads, "notebook_combination"))
    patches = ([_set_values([h], runs.clean, runs.corrupted, "jointly") for h in heads]
               + [_set_values(heads, runs.clean, runs.corrupted, m) for m in MODES])
    metric, _ = run_patches(model, batch, runs.base, patches, memory_mb=memory_mb)  # every patch of the set in as few passes as fit
    effect = metric - runs.m_corrupted.cpu()
    return SetEffects(heads, torch.cat([effect[:len(heads)].sum(0, keepdim=True), effect[len(heads):]]),
                      (runs.m_clean - runs.m_corrupted).cpu())


# --------------------------------------------------------------------------- direct logit attribution


@dataclass(frozen=True)
class DirectEffects:
    """Direct logit attribution of one run: every term of the final residual stream, per prompt.

    ``heads`` [prompt, layer, head], ``mlps`` and ``attention_biases`` [prompt, layer],
    ``embeddings`` and ``biases`` (final norm bias and unembedding bias) [prompt]; their sum
    is ``total``, the logit difference of the run.
    """

    heads: Float[Tensor, "prompt layer head"]
    mlps: Float[Tensor, "prompt layer"]
    attention_biases: Float[Tensor, "prompt layer"]
    embeddings: Float[Tensor, "prompt"]
    biases: Float[Tensor, "prompt"]
    total: Float[Tensor, "prompt"]

    def sum(self) -> Float[Tensor, "prompt"]:
        return (self.heads.sum((1, 2)) + self.mlps.sum(1) + self.attention_biases.sum(1) + self.embeddings + self.biases)


def _answer_directions(model, batch: Batch) -> Float[Tensor, "prompt d_model"]:
    if batch.task is Task.GREATER_THAN:
        raise AttributionError("direct logit attribution needs a logit-difference task (IOI, Gender-Bias, Capital-Country)")
    W_U = model.W_U
    return (W_U[:, batch.answers[:, 0]] - W_U[:, batch.answers[:, 1]]).T


def _final_norm(model):
    """(weight, bias or None, centred: LayerNorm subtracts the mean, RMSNorm does not)."""
    module = getattr(model.ln_final, "_original_component", model.ln_final)
    bias = getattr(module, "bias", None)
    return module.weight, bias, "rms" not in type(module).__name__.lower()


def project(model, batch: Batch, outputs: Float[Tensor, "prompt ... d_model"], scale: Float[Tensor, "prompt"],
            tokens: Float[Tensor, "prompt"] | None = None) -> Float[Tensor, "prompt ..."]:
    """Direct logit attribution of residual-stream terms at the last token: through the final norm
    (centring for LayerNorm, division by ``scale``, the weight) and onto the answer direction
    (``tokens`` given: onto each prompt's token's own unembedding, its logit instead of the difference)."""
    weight, _, centred = _final_norm(model)
    if centred:
        outputs = outputs - outputs.mean(-1, keepdim=True)
    unembed = _answer_directions(model, batch) if tokens is None else model.W_U[:, tokens.to(model.W_U.device)].T
    direction = unembed * weight  # [prompt, d_model]
    shape = (outputs.shape[0],) + (1,) * (outputs.dim() - 2) + (outputs.shape[-1],)
    return (outputs * direction.view(shape)).sum(-1) / scale.view(shape[:-1])


def direct_logit_attribution(model, batch: Batch, run: str = "clean") -> DirectEffects:
    """Every head's (and MLP's, embedding's, bias's) direct effect on the logit difference in one run."""
    if run not in ("clean", "corrupted"):
        raise AttributionError(f"run must be 'clean' or 'corrupted', got {run!r}")
    info = model_info(model)
    tokens = batch.clean if run == "clean" else batch.corrupted
    L = info.n_layers
    names = ([result_hook(l) for l in range(L)] + [f"blocks.{l}.hook_attn_out" for l in range(L)]
             + [f"blocks.{l}.hook_mlp_out" for l in range(L)] + [f"blocks.{l}.hook_resid_pre" for l in range(1)]
             + ["ln_final.hook_scale"])
    keep = set(names)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in keep)
        rows = torch.arange(len(batch))
        at = lambda t: t[rows, batch.last.to(t.device)]  # noqa: E731  each prompt's own last token
        scale = at(cache["ln_final.hook_scale"])[:, 0]
        results = torch.stack([at(cache[result_hook(l)]) for l in range(L)], 1)  # [prompt, layer, head, d_model]
        attn = torch.stack([at(cache[f"blocks.{l}.hook_attn_out"]) for l in range(L)], 1)
        mlps = torch.stack([at(cache[f"blocks.{l}.hook_mlp_out"]) for l in range(L)], 1)
        embeddings = at(cache["blocks.0.hook_resid_pre"])
        heads = project(model, batch, results, scale)
        biases_attn = project(model, batch, attn - results.sum(2), scale)
        final = final_logits(logits, batch.last.to(logits.device))
        total = final.gather(1, batch.answers[:, :1].to(final.device))[:, 0] - final.gather(1, batch.answers[:, 1:2].to(final.device))[:, 0]
        _, bias, _ = _final_norm(model)
        direction = _answer_directions(model, batch)
        b_U = getattr(model, "b_U", None)
        biases = torch.zeros(len(batch), device=final.device)
        if bias is not None:
            biases = biases + direction @ bias
        if b_U is not None:
            biases = biases + b_U[batch.answers[:, 0]] - b_U[batch.answers[:, 1]]
    return DirectEffects(heads.cpu(), project(model, batch, mlps, scale).cpu(), biases_attn.cpu(),
                         project(model, batch, embeddings, scale).cpu(), biases.cpu(), total.cpu())


def token_direct_effects(model, batch: Batch, heads: Sequence[Head], run: str = "clean") -> Float[Tensor, "prompt head token"]:
    """Each head's direct effect on the logit of the answer (``[..., 0]``) and of the distractor (``[..., 1]``), apart.

    :func:`direct_logit_attribution` gives their difference; apart, they say whether a head
    raises the answer (copies it) or lowers the distractor (suppresses it). Same run, final
    norm's scale frozen, read at each prompt's last token.
    """
    heads = check_heads(model, heads)
    if run not in ("clean", "corrupted"):
        raise AttributionError(f"run must be 'clean' or 'corrupted', got {run!r}")
    tokens = batch.clean if run == "clean" else batch.corrupted
    names = sorted({result_hook(l) for l, _ in heads}) + ["ln_final.hook_scale"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        scale = at_last(cache["ln_final.hook_scale"], batch.last)[:, 0]
        outputs = torch.stack([at_last(cache[result_hook(l)][:, :, h], batch.last) for l, h in heads], 1)  # [prompt, head, d_model]
        return torch.stack([project(model, batch, outputs, scale, batch.answers[:, k]) for k in (0, 1)], -1).cpu()


def patched_direct_effects(model, batch: Batch, heads: Sequence[Head], mode: str = "jointly",
                           memory_mb: float | None = None) -> Float[Tensor, "prompt head"]:
    """Direct logit attribution of each head of the set under a patch, in the patched run's final-norm scale.

    Under the linear combination the heads' outputs sum to the joint patch's, so their
    direct effects sum to the joint patch's too when the scale is the same (the check the
    original notebook left to do); the scale is each patched run's own. Under the
    notebook's combination a head's output is its patched ``z`` through its own ``W_O``.
    """
    heads = check_heads(model, heads)
    runs = clean_and_corrupted_runs(model, batch, _hook_names(heads, mode))
    values = _set_values(heads, runs.clean, runs.corrupted, mode)
    _, store = run_patches(model, batch, runs.base, [values], ["ln_final.hook_scale"], memory_mb)
    scale = at_last(store["ln_final.hook_scale"][0], batch.last)[:, 0]
    with torch.no_grad():
        if mode == "notebook_combination":
            W_O = model.W_O
            outputs = torch.stack([at_last(values[z_hook(l)][h], batch.last) @ W_O[l, h] for l, h in heads], 1)
        else:
            outputs = torch.stack([at_last(values[result_hook(l)][h], batch.last) for l, h in heads], 1)
        return project(model, batch, outputs, scale).cpu()



# --------------------------------------------------------------------------- path patching


def frozen_names(model) -> list[str]:
    L = model_info(model).n_layers
    return [result_hook(l) for l in range(L)] + [f"blocks.{l}.hook_mlp_out" for l in range(L)]


def direct_patch(model, sender: Head, clean, corrupted) -> Patch:
    """The patch that sets ``sender``'s output clean and freezes every other head's and every MLP's output at the corrupted run.

    The sender then reaches the logits and any later input only directly, through the residual stream.
    """
    s_layer, s_head = sender
    patch: Patch = {name: {None: corrupted[name]} for name in frozen_names(model)}
    patch[result_hook(s_layer)] = {None: corrupted[result_hook(s_layer)], s_head: clean[result_hook(s_layer)][:, :, s_head]}
    return patch


def path_patching(
    model, batch: Batch, senders: Sequence[Head], receivers: Sequence[Head], inputs: Sequence[str] = INPUTS,
    together: bool = False, memory_mb: float | None = None,
) -> Patched:
    """The metric when each sender's clean output reaches each receiver's query, key or value input alone.

    For one sender: run the corrupted prompt with the sender's output set to its clean value
    and every other head's output and every MLP's output frozen at their corrupted values,
    so the sender reaches later layers only directly, through the residual stream; record
    each receiver's q, k and v there. Then, for each receiver and input, run the corrupted
    prompt with only that input of that receiver replaced by the recorded value (all else
    recomputed) and measure the metric. ``together``: replace that input of every receiver
    at once (one column: the sender's effect on the receivers as a set, the standard check
    of S-inhibition heads → name movers' queries). A receiver in the sender's layer or
    below cannot be reached: its metric is exactly the corrupted run's. In models whose
    query heads share key/value heads (grouped-query attention), a receiver's k and v are
    its key/value head's, shared with the other query heads of its group. The runs of many
    senders share forward passes (:func:`run_patches`).

    Returns :class:`Patched` with ``metric`` ``[input, sender, receiver (1 if together), prompt]``.
    """
    senders, receivers = check_heads(model, senders, "senders"), check_heads(model, receivers, "receivers")
    unknown = set(inputs) - set(INPUTS)
    if unknown or not inputs:
        raise AttributionError(f"inputs must be some of {', '.join(INPUTS)}, got {list(inputs)!r}")
    info = model_info(model)
    group = info.n_heads // info.n_kv_heads
    runs = clean_and_corrupted_runs(model, batch, frozen_names(model))
    qkv_name = lambda layer, x: f"blocks.{layer}.attn.hook_{x}"  # noqa: E731
    columns = [receivers] if together else [[r] for r in receivers]
    out = runs.m_corrupted.cpu().repeat(len(inputs), len(senders), len(columns), 1)
    record = [qkv_name(l, x) for l in sorted({l for l, _ in receivers}) for x in inputs]
    _, direct = run_patches(model, batch, runs.base, [direct_patch(model, sender, runs.clean, runs.corrupted) for sender in senders],
                            record, memory_mb)
    patches, where = [], []
    for s, sender in enumerate(senders):
        for c, column in enumerate(columns):
            reached = [(l, h) for l, h in column if l > sender[0]]
            for i, x in enumerate(inputs):
                if not reached:
                    continue  # not downstream of the sender: exactly no effect
                patch: Patch = {}
                for l, h in reached:
                    index = h if x == "q" else h // group
                    patch.setdefault(qkv_name(l, x), {})[index] = direct[qkv_name(l, x)][s][:, :, index]
                patches.append(patch)
                where.append((i, s, c))
    if patches:
        metric, _ = run_patches(model, batch, runs.base, patches, memory_mb=memory_mb)
        for (i, s, c), row in zip(where, metric):
            out[i, s, c] = row
    return Patched(out, runs.m_clean.cpu(), runs.m_corrupted.cpu())


def mlp_paths(model, batch: Batch, sender: Head, memory_mb: float | None = None) -> tuple[list[str], Patched]:
    """A head's effect split by path: all paths, its direct path to the logits, and its path through each later MLP.

    ``"total"``: the corrupted run with the sender's output clean, everything else
    recomputed. ``"direct"``: the same with every other head's and every MLP's output frozen
    at the corrupted run, so the sender reaches the logits only directly. ``"MLP l"``: the
    corrupted run with only MLP ``l``'s input (``hook_mlp_in``) replaced by its value in that
    frozen run: the path sender → MLP l → logits, everything after MLP l recomputed. The
    paths through later heads are the rest; paths need not add up (the network is not
    linear), and the figure says so. Returns the path names and :class:`Patched` ``[path, prompt]``.
    """
    (sender,) = check_heads(model, [sender], "sender")
    info = model_info(model)
    later = list(range(sender[0], info.n_layers))  # the sender's own layer's MLP reads its output too
    runs = clean_and_corrupted_runs(model, batch, frozen_names(model))
    mlp_in = lambda l: f"blocks.{l}.hook_mlp_in"  # noqa: E731
    total_and_direct, store = run_patches(model, batch, runs.base,
                                          [_set_values([sender], runs.clean, runs.corrupted, "jointly"),
                                           direct_patch(model, sender, runs.clean, runs.corrupted)],
                                          [mlp_in(l) for l in later], memory_mb)
    through, _ = run_patches(model, batch, runs.base, [{mlp_in(l): {None: store[mlp_in(l)][1]}} for l in later],
                             memory_mb=memory_mb)
    return (["total", "direct"] + [f"MLP {l}" for l in later],
            Patched(torch.cat([total_and_direct, through]), runs.m_clean.cpu(), runs.m_corrupted.cpu()))


# --------------------------------------------------------------------------- attention


def readout(
    pattern: Float[Tensor, "prompt head query key"], tokens: Float[Tensor, "prompt key"], last: Float[Tensor, "prompt"],
    targets: Float[Tensor, "prompt target"],
) -> Float[Tensor, "prompt head target"]:
    """Attention from each prompt's last token to every position (up to it) holding each target token, summed."""
    rows = torch.arange(pattern.shape[0], device=pattern.device)
    from_last = pattern[rows, :, last.to(pattern.device)]  # [prompt, head, key]
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    within = positions[None] <= last.to(tokens.device)[:, None]  # [prompt, key]
    masks = (tokens[:, None, :] == targets[:, :, None].to(tokens.device)) & within[:, None]  # [prompt, target, key]
    return torch.einsum("phk,ptk->pht", from_last, masks.to(from_last.dtype))


def attention_from_last(model, batch: Batch, heads: Sequence[Head], run: str = "clean") -> Float[Tensor, "prompt head position"]:
    """Each head's attention pattern from each prompt's last token over every position: where the head looks when it writes
    the answer.

    A row sums to 1 over the positions up to the prompt's last token and is 0 past it (the
    padding). :func:`attention_readout` is this summed over the positions holding IO and S.
    """
    heads = check_heads(model, heads)
    if run not in ("clean", "corrupted"):
        raise AttributionError(f"run must be 'clean' or 'corrupted', got {run!r}")
    tokens = batch.clean if run == "clean" else batch.corrupted
    names = sorted({f"blocks.{l}.attn.hook_pattern" for l, _ in heads})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    rows = torch.arange(len(tokens))
    last = batch.last.to(tokens.device)
    out = [cache[f"blocks.{l}.attn.hook_pattern"][rows, h, last] for l, h in heads]  # [prompt, key] each
    return torch.stack(out, 1).float().cpu()


def attention_readout(model, batch: Batch, heads: Sequence[Head], run: str = "clean") -> Float[Tensor, "prompt head target"]:
    """Each head's attention from the last token to the indirect object's and the subject's tokens: ``[..., 0]`` IO, ``[..., 1]`` S.

    IO and S are the clean prompt's answer and distractor (``batch.answers``); attention to
    every position holding the token is summed (the subject appears twice).
    """
    heads = check_heads(model, heads)
    if batch.task is not Task.IOI:
        raise AttributionError("attention_readout reads IOI prompts (indirect object and subject names)")
    from_last = attention_from_last(model, batch, heads, run)  # [prompt, head, key], 0 past each prompt's end
    tokens = (batch.clean if run == "clean" else batch.corrupted).cpu()
    targets = tokens[:, None, :] == batch.answers[:, :2, None].cpu()  # [prompt, target, key]
    return torch.einsum("phk,ptk->pht", from_last, targets.to(from_last.dtype))

"""Head sets: patching them jointly, one by one and as a linear combination; direct logit attribution; path patching.

The IOI circuit (Wang et al. 2023) has *name mover* heads that copy the indirect object's
name to the answer, *negative name movers* that write against it, and *backup* name movers
that take over when the name movers are removed. This module asks how such a set of heads
behaves when patched as a whole, and through which paths its effect flows.

Every patch is in the denoising frame: the base run is the corrupted prompt and patched
heads take values derived from the clean one. A patch gives the metric per prompt
(:class:`Patched`); its effect is stated as a **share of the clean−corrupted gap, a ratio of
means**: (mean metric − mean metric(corrupted)) / (mean metric(clean) − mean
metric(corrupted)), with a bootstrap interval over prompts
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
- :func:`backup_response`: the backup name movers by their response, as Wang et al. define
  them: heads whose direct effect rises when the name movers are mean-ablated.
- :func:`attention_readout`: attention from the last token to the indirect object and the subject.
- :func:`path_patching`: the effect of a sender head's clean output on a receiver head's
  query, key or value input alone, every other head and MLP frozen at the corrupted run;
  :func:`mlp_paths`: a head's effect split into its direct path and its paths through each
  later MLP; :func:`copy_suppression`: what a negative edge's receiver does to the token
  its sender copies.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ig_ap.analysis import Interval, Patched, bootstrap, ratio_of_means  # noqa: F401  (Patched: part of this module's API)
from ig_ap.attribution import AttributionError
from ig_ap.models import model_info
from ig_ap.results import memo
from ig_ap.tasks import Batch, Task, final_logits

Head = tuple[int, int]

PUBLISHED_IOI_HEADS: dict[str, list[Head]] = {
    "name movers": [(9, 6), (9, 9), (10, 0)],
    "negative name movers": [(10, 7), (11, 10)],
    "backup name movers": [(9, 0), (9, 7), (10, 1), (10, 2), (10, 6), (10, 10), (11, 2), (11, 9)],
    "S-inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
}
"""The IOI head classes of GPT-2 small (Wang et al. 2023), as (layer, head)."""

MODES = ("jointly", "linear_combination", "notebook_combination")
INPUTS = ("q", "k", "v")
MIN_JOINT_SHARE = 0.05
"""A fraction of the joint effect is undefined (NaN) when the joint effect is under this share of the gap."""


def result_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_result"


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def is_gpt2_small(model) -> bool:
    """True for GPT-2 small (12 layers × 12 heads, d_model 768, the ``gpt2`` checkpoint)."""
    info = model_info(model)
    return info.hf_name in ("gpt2", "openai-community/gpt2") or (
        (info.n_layers, info.n_heads, info.d_model, info.d_vocab) == (12, 12, 768, 50257)
    )


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


def _last(t: Tensor, last: Tensor) -> Tensor:
    """Each prompt's row at its own last position."""
    return t[torch.arange(len(last)), last.to(t.device)]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise AttributionError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")


# --------------------------------------------------------------------------- patched metrics and their shares


def _runs(model, batch: Batch, names: Sequence[str]):
    """Clean and corrupted caches of ``names`` and the two metrics."""
    keep = set(names)
    with torch.no_grad():
        clean_logits, clean = model.run_with_cache(batch.clean, names_filter=lambda n: n in keep)
        corrupted_logits, corrupted = model.run_with_cache(batch.corrupted, names_filter=lambda n: n in keep)
    return clean, corrupted, batch.score(clean_logits), batch.score(corrupted_logits)


def _hook_names(heads: Sequence[Head], mode: str) -> list[str]:
    """The hooks a patch of ``heads`` in ``mode`` writes: ``hook_z`` for the notebook's combination, else ``hook_result``."""
    hook = z_hook if mode == "notebook_combination" else result_hook
    return sorted({hook(l) for l, _ in heads})


def _set_values(heads: Sequence[Head], clean, corrupted, mode: str) -> dict[str, dict[int, Tensor]]:
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


MAX_SEQUENCES = 64
"""At most this many prompt copies (patches × prompts) go through the model in one batched pass."""

Patch = dict[str, dict[int | None, Tensor]]
"""What one patched run writes: hook name → head index (``None``: the whole activation, written first) → value ``[prompt, pos, ...]``."""


def _run_copies(model, batch: Batch, patches: Sequence[Patch], record: Sequence[str] = (),
                max_sequences: int | None = None) -> tuple[Float[Tensor, "patch prompt"], dict[str, Tensor]]:
    """The corrupted run under each of ``patches``, several patches per forward pass.

    The corrupted batch is repeated once per patch of a pass (copy ``j`` holds rows
    ``j·n … (j+1)·n``), each copy's hooks write its own patch, and the metric is read per copy.
    Returns the metric ``[patch, prompt]`` and the activations named in ``record`` as
    ``{name: [patch, prompt, ...]}``, as they were in each patched run.
    """
    n = len(batch)
    per_pass = max(1, (max_sequences or MAX_SEQUENCES) // n)
    names = sorted({name for patch in patches for name in patch} | set(record))
    metrics: list[Tensor] = []
    records: dict[str, list[Tensor]] = {name: [] for name in record}
    for start in range(0, len(patches), per_pass):
        chunk = patches[start:start + per_pass]
        k = len(chunk)
        copies = replace(batch, clean=batch.clean.repeat(k, 1), corrupted=batch.corrupted.repeat(k, 1),
                         answers=batch.answers.repeat(k, 1), last=batch.last.repeat(k))
        store: dict[str, Tensor] = {}

        def hook(activation, hook, name):  # hook.name may be an alias's target: use the name we hooked
            if any(name in patch for patch in chunk):
                activation = activation.clone()
                for j, patch in enumerate(chunk):
                    rows = slice(j * n, (j + 1) * n)
                    for index, value in patch.get(name, {}).items():
                        if index is None:
                            activation[rows] = value
                        else:
                            activation[rows, :, index] = value
            if name in records:
                store[name] = activation.detach().clone()
            return activation

        with torch.no_grad():
            logits = model.run_with_hooks(copies.corrupted, fwd_hooks=[(name, functools.partial(hook, name=name)) for name in names])
            metrics.append(copies.score(logits).view(k, n).cpu())
        for name in record:
            records[name].append(store[name].view(k, n, *store[name].shape[1:]))
    return torch.cat(metrics), {name: torch.cat(v) for name, v in records.items()}


def patch_heads(model, batch: Batch, heads: Sequence[Head], mode: str = "jointly") -> Patched:
    """The metric of the corrupted run with ``heads`` patched together in ``mode`` (see the module doc), per prompt."""
    heads = check_heads(model, heads)
    _check_mode(mode)
    clean, corrupted, m_clean, m_corrupted = _runs(model, batch, _hook_names(heads, mode))
    metric, _ = _run_copies(model, batch, [_set_values(heads, clean, corrupted, mode)])
    return Patched(metric[0], m_clean.cpu(), m_corrupted.cpu())


WAYS = ("one by one (summed)", "jointly", "linear combination", "notebook's combination")
"""The ways :func:`set_effects` patches a set: one head at a time (effects summed), then :data:`MODES` in order."""


@dataclass(frozen=True)
class SetEffects:
    """One head set's effects per prompt under each of :data:`WAYS`, and the gap: shares and fractions by the ratio of means."""

    heads: list[Head]
    effects: Float[Tensor, "way prompt"]  # metric − metric(corrupted), in WAYS order
    gap: Float[Tensor, "prompt"]  # metric(clean) − metric(corrupted)

    def share(self, way: str, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """The effect of ``way`` as a share of the gap, with its 95% bootstrap interval."""
        return ratio_of_means(self.effects[WAYS.index(way)], self.gap, n_resamples, seed)

    def fraction(self, way: str, n_resamples: int = 1000, seed: int = 0) -> Interval:
        """The effect of ``way`` over the joint patch's (ratio of means, interval over prompts); NaN when the joint
        effect is under :data:`MIN_JOINT_SHARE` of the gap, where a ratio would say nothing."""
        if abs(self.effects[WAYS.index("jointly")].mean() / self.gap.mean()) < MIN_JOINT_SHARE:
            return Interval(math.nan, math.nan, math.nan, self.effects.shape[1])
        return ratio_of_means(self.effects[WAYS.index(way)], self.effects[WAYS.index("jointly")], n_resamples, seed)

    def select(self, prompts: Tensor) -> "SetEffects":
        """Only the prompts ``prompts`` picks (a boolean mask or indices), e.g. those the model solves."""
        return SetEffects(self.heads, self.effects[:, prompts], self.gap[prompts])


def set_effects(model, batch: Batch, heads: Sequence[Head]) -> SetEffects:
    """Patch ``heads`` one by one (effects summed per prompt), and together in each of :data:`MODES`."""
    heads = check_heads(model, heads)
    clean, corrupted, m_clean, m_corrupted = _runs(model, batch, _hook_names(heads, "jointly") + _hook_names(heads, "notebook_combination"))
    patches = [_set_values([h], clean, corrupted, "jointly") for h in heads] + [_set_values(heads, clean, corrupted, m) for m in MODES]
    metric, _ = _run_copies(model, batch, patches)  # every patch of the set in as few passes as fit
    effect = metric - m_corrupted.cpu()
    return SetEffects(heads, torch.cat([effect[:len(heads)].sum(0, keepdim=True), effect[len(heads):]]), (m_clean - m_corrupted).cpu())


def cached_set_effects(model, dataset, heads: Sequence[Head]) -> SetEffects:
    """:func:`set_effects` on all of ``dataset``'s prompts, from the results cache when model, prompts, heads and code are unchanged."""
    heads = check_heads(model, heads)

    def compute():
        e = set_effects(model, dataset.batch(), heads)
        return {"effects": e.effects, "gap": e.gap}

    value = memo(model, dataset, "set_effects", compute, modules=("heads",), heads=[list(h) for h in heads])
    return SetEffects(heads, value["effects"], value["gap"])


def _patched(value: dict[str, Tensor]) -> Patched:
    return Patched(value["metric"], value["clean"], value["corrupted"])


def cached_path_patching(model, dataset, senders: Sequence[Head], receivers: Sequence[Head], inputs: Sequence[str] = INPUTS,
                         together: bool = False) -> Patched:
    """:func:`path_patching` on all of ``dataset``'s prompts, from the results cache when nothing it depends on changed."""
    senders, receivers = check_heads(model, senders, "senders"), check_heads(model, receivers, "receivers")
    return _patched(memo(model, dataset, "path_patching",
                         lambda: path_patching(model, dataset.batch(), senders, receivers, inputs, together).to_dict(),
                         modules=("heads",), senders=[list(h) for h in senders], receivers=[list(h) for h in receivers],
                         inputs=list(inputs), together=together))


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
        scale = _last(cache["ln_final.hook_scale"], batch.last)[:, 0]
        outputs = torch.stack([_last(cache[result_hook(l)][:, :, h], batch.last) for l, h in heads], 1)  # [prompt, head, d_model]
        return torch.stack([project(model, batch, outputs, scale, batch.answers[:, k]) for k in (0, 1)], -1).cpu()


def patched_direct_effects(model, batch: Batch, heads: Sequence[Head], mode: str = "jointly") -> Float[Tensor, "prompt head"]:
    """Direct logit attribution of each head of the set under a patch, in the patched run's final-norm scale.

    Under the linear combination the heads' outputs sum to the joint patch's, so their
    direct effects sum to the joint patch's too when the scale is the same (the check the
    original notebook left to do); the scale is each patched run's own. Under the
    notebook's combination a head's output is its patched ``z`` through its own ``W_O``.
    """
    heads = check_heads(model, heads)
    clean, corrupted, _, _ = _runs(model, batch, _hook_names(heads, mode))
    values = _set_values(heads, clean, corrupted, mode)
    _, store = _run_copies(model, batch, [values], ["ln_final.hook_scale"])
    scale = _last(store["ln_final.hook_scale"][0], batch.last)[:, 0]
    with torch.no_grad():
        if mode == "notebook_combination":
            W_O = model.W_O
            outputs = torch.stack([_last(values[z_hook(l)][h], batch.last) @ W_O[l, h] for l, h in heads], 1)
        else:
            outputs = torch.stack([_last(values[result_hook(l)][h], batch.last) for l, h in heads], 1)
        return project(model, batch, outputs, scale).cpu()


# --------------------------------------------------------------------------- path patching


def _frozen_names(model) -> list[str]:
    L = model_info(model).n_layers
    return [result_hook(l) for l in range(L)] + [f"blocks.{l}.hook_mlp_out" for l in range(L)]


def _direct_patch(model, sender: Head, clean, corrupted) -> Patch:
    """The patch that sets ``sender``'s output clean and freezes every other head's and every MLP's output at the corrupted run.

    The sender then reaches the logits and any later input only directly, through the residual stream.
    """
    s_layer, s_head = sender
    patch: Patch = {name: {None: corrupted[name]} for name in _frozen_names(model)}
    patch[result_hook(s_layer)] = {None: corrupted[result_hook(s_layer)], s_head: clean[result_hook(s_layer)][:, :, s_head]}
    return patch


def path_patching(
    model, batch: Batch, senders: Sequence[Head], receivers: Sequence[Head], inputs: Sequence[str] = INPUTS,
    together: bool = False,
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
    senders share forward passes (:data:`MAX_SEQUENCES`).

    Returns :class:`Patched` with ``metric`` ``[input, sender, receiver (1 if together), prompt]``.
    """
    senders, receivers = check_heads(model, senders, "senders"), check_heads(model, receivers, "receivers")
    unknown = set(inputs) - set(INPUTS)
    if unknown or not inputs:
        raise AttributionError(f"inputs must be some of {', '.join(INPUTS)}, got {list(inputs)!r}")
    info = model_info(model)
    group = info.n_heads // info.n_kv_heads
    clean, corrupted, m_clean, m_corrupted = _runs(model, batch, _frozen_names(model))
    qkv_name = lambda layer, x: f"blocks.{layer}.attn.hook_{x}"  # noqa: E731
    columns = [receivers] if together else [[r] for r in receivers]
    out = m_corrupted.cpu().repeat(len(inputs), len(senders), len(columns), 1)
    record = [qkv_name(l, x) for l in sorted({l for l, _ in receivers}) for x in inputs]
    _, direct = _run_copies(model, batch, [_direct_patch(model, sender, clean, corrupted) for sender in senders], record)
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
        metric, _ = _run_copies(model, batch, patches)
        for (i, s, c), row in zip(where, metric):
            out[i, s, c] = row
    return Patched(out, m_clean.cpu(), m_corrupted.cpu())


def mlp_paths(model, batch: Batch, sender: Head) -> tuple[list[str], Patched]:
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
    clean, corrupted, m_clean, m_corrupted = _runs(model, batch, _frozen_names(model))
    mlp_in = lambda l: f"blocks.{l}.hook_mlp_in"  # noqa: E731
    total_and_direct, store = _run_copies(model, batch, [_set_values([sender], clean, corrupted, "jointly"),
                                                         _direct_patch(model, sender, clean, corrupted)],
                                          [mlp_in(l) for l in later])
    through, _ = _run_copies(model, batch, [{mlp_in(l): {None: store[mlp_in(l)][1]}} for l in later])
    return (["total", "direct"] + [f"MLP {l}" for l in later],
            Patched(torch.cat([total_and_direct, through]), m_clean.cpu(), m_corrupted.cpu()))


# --------------------------------------------------------------------------- backup name movers, attention, copy suppression


@dataclass(frozen=True)
class BackupResponse:
    """How every head's direct effect responds when the name movers are mean-ablated, per prompt.

    ``rise[p, l, h]``: head (l, h)'s direct logit attribution in the ablated clean run minus
    in the clean run (both in their own run's final-norm scale); ``lost[p]``: the direct
    effect the name movers lost. A head is a backup name mover when its mean rise is at
    least ``min_share`` of the mean loss and its 95% bootstrap interval lies above 0
    (with fewer than 3 prompts there is no interval and the mean alone decides).
    """

    movers: list[Head]
    rise: Float[Tensor, "prompt layer head"]
    lost: Float[Tensor, "prompt"]
    min_share: float

    @property
    def threshold(self) -> float:
        return self.min_share * self.lost.mean().item()

    def select(self, prompts: Tensor) -> "BackupResponse":
        """Only the prompts ``prompts`` picks (a boolean mask or indices), e.g. those the model solves."""
        return BackupResponse(self.movers, self.rise[prompts], self.lost[prompts], self.min_share)

    def interval(self, head: Head, n_resamples: int = 1000, seed: int = 0) -> Interval:
        return bootstrap(self.rise[:, head[0], head[1]], n_resamples=n_resamples, seed=seed)

    def heads(self, n_resamples: int = 1000, seed: int = 0) -> list[Head]:
        """The backup name movers by the rule above, largest mean rise first."""
        mean = self.rise.mean(0)
        order = [(int(i) // mean.shape[1], int(i) % mean.shape[1]) for i in mean.flatten().argsort(descending=True)]
        out = []
        for head in order:
            if head in self.movers or mean[head].item() < self.threshold or self.threshold <= 0:
                continue
            ci = self.interval(head, n_resamples, seed)
            if math.isnan(ci.low) or ci.low > 0:
                out.append(head)
        return out

    @property
    def rule(self) -> str:
        return backup_rule(self.min_share)


def backup_rule(min_share: float) -> str:
    """The rule :class:`BackupResponse` applies, in words."""
    return (f"backup name movers are the heads whose direct effect on the logit difference rises, when the name movers "
            f"are mean-ablated at the last token, by at least {min_share:.0%} of the direct effect the name movers lose, "
            "with a 95% bootstrap interval above 0")


def backup_response(model, batch: Batch, movers: Sequence[Head], min_share: float = 0.05) -> BackupResponse:
    """Every head's response to the mean-ablation of ``movers`` (Wang et al. 2023's definition of backup name movers).

    One batched pass over [clean prompts; clean prompts with the movers ablated;
    corrupted prompts]: at each mover's layer, its output at the last token of the second
    copy is replaced by its mean output at the last token over the corrupted prompts
    (the corrupted copy runs in the same pass), and every head's output at the last token
    and the final norm's scale are read for the first two copies. See :class:`BackupResponse`.
    """
    movers = check_heads(model, movers, "name movers")
    if not 0 < min_share < 1:
        raise AttributionError(f"min_share must lie in (0, 1), got {min_share!r}")
    info = model_info(model)
    n = len(batch)
    tokens = torch.cat([batch.clean, batch.clean, batch.corrupted])
    last = torch.cat([batch.last] * 3).to(tokens.device)
    rows = torch.arange(n)
    store: dict[str, Tensor] = {}
    by_layer: dict[int, list[int]] = {}
    for l, h in movers:
        by_layer.setdefault(l, []).append(h)

    def hook(activation, hook, name):
        layer = int(name.split(".")[1]) if name.startswith("blocks.") else -1
        if layer in by_layer:
            activation = activation.clone()
            mean = _last(activation[2 * n:], batch.last).mean(0)  # [head, d_model], over the corrupted prompts
            for h in by_layer[layer]:
                activation[n + rows, batch.last.to(activation.device), h] = mean[h]
        store[name] = _last(activation, last)[: 2 * n].detach()
        return activation

    names = [result_hook(l) for l in range(info.n_layers)] + ["ln_final.hook_scale"]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(name, functools.partial(hook, name=name)) for name in names])
        outputs = torch.stack([store[result_hook(l)] for l in range(info.n_layers)], 1)  # [2n, layer, head, d_model]
        scale = store["ln_final.hook_scale"][:, 0]
        clean_dla = project(model, batch, outputs[:n], scale[:n])
        ablated_dla = project(model, batch, outputs[n:], scale[n:])
    rise = (ablated_dla - clean_dla).cpu()
    lost = sum(rise[:, l, h] for l, h in movers) * -1
    return BackupResponse(movers, rise, lost, min_share)


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


def attention_readout(model, batch: Batch, heads: Sequence[Head], run: str = "clean") -> Float[Tensor, "prompt head target"]:
    """Each head's attention from the last token to the indirect object's and the subject's tokens: ``[..., 0]`` IO, ``[..., 1]`` S.

    IO and S are the clean prompt's answer and distractor (``batch.answers``); attention to
    every position holding the token is summed (the subject appears twice).
    """
    heads = check_heads(model, heads)
    if batch.task is not Task.IOI:
        raise AttributionError("attention_readout reads IOI prompts (indirect object and subject names)")
    if run not in ("clean", "corrupted"):
        raise AttributionError(f"run must be 'clean' or 'corrupted', got {run!r}")
    tokens = batch.clean if run == "clean" else batch.corrupted
    names = sorted({f"blocks.{l}.attn.hook_pattern" for l, _ in heads})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = [readout(cache[f"blocks.{l}.attn.hook_pattern"][:, h:h + 1], tokens, batch.last, batch.answers[:, :2])[:, 0] for l, h in heads]
    return torch.stack(out, 1).cpu()


ROLES = ("copies IO", "pushes S down", "neither pattern is established")


def mover_roles(attention: Float[Tensor, "prompt head target"], writes: Float[Tensor, "prompt head token"],
                n_resamples: int = 1000, seed: int = 0) -> list[str]:
    """What each head does at the last token, from :func:`attention_readout` and :func:`token_direct_effects`.

    ``"copies IO"``: it attends more to IO than to S and raises the IO logit; ``"pushes S
    down"``: it attends more to S and lowers the S logit; each with 95% bootstrap intervals
    over prompts that exclude 0 (else ``"neither pattern is established"``).
    """
    roles = []
    for h in range(attention.shape[1]):
        looks = bootstrap(attention[:, h, 0] - attention[:, h, 1], n_resamples=n_resamples, seed=seed)
        io, s = (bootstrap(writes[:, h, k], n_resamples=n_resamples, seed=seed) for k in (0, 1))
        roles.append(ROLES[0] if looks.low > 0 and io.low > 0 else ROLES[1] if looks.high < 0 and s.high < 0 else ROLES[2])
    return roles


@dataclass(frozen=True)
class CopySuppression:
    """What a sender → receiver edge (through the receiver's query) does, per prompt, measured against the token
    the sender copies (``copied``, the clean prompt's indirect object).

    ``sender_logit``: the sender's direct effect on the copied token's logit (``[:, 0]``) and
    on the subject's (``[:, 1]``) in the clean run;
    ``receiver_logit`` and ``receiver_attention``: the receiver's direct effect on that logit
    and its attention from the last token to that token, in the corrupted run (``[:, 0]``) and
    with the sender's clean output reaching the receiver's query alone (``[:, 1]``).
    Copy suppression (McDougall et al. 2023) predicts: the sender raises the token's logit,
    and through the edge the receiver attends more to the token and lowers its logit.
    """

    sender: Head
    receiver: Head
    sender_logit: Float[Tensor, "prompt token"]
    receiver_logit: Float[Tensor, "prompt run"]
    receiver_attention: Float[Tensor, "prompt run"]


    def checks(self, n_resamples: int = 1000, seed: int = 0) -> dict[str, Interval]:
        """Every measurement as a mean over prompts with its 95% bootstrap interval, named for a table."""
        mean = lambda x: bootstrap(x, n_resamples=n_resamples, seed=seed)  # noqa: E731
        return {
            "sender's direct effect on the IO logit (clean run)": mean(self.sender_logit[:, 0]),
            "sender's direct effect on the S logit (clean run)": mean(self.sender_logit[:, 1]),
            "receiver's attention to IO, corrupted run": mean(self.receiver_attention[:, 0]),
            "receiver's attention to IO, with the edge": mean(self.receiver_attention[:, 1]),
            "change of the receiver's attention to IO": mean(self.receiver_attention[:, 1] - self.receiver_attention[:, 0]),
            "receiver's direct effect on the IO logit, corrupted run": mean(self.receiver_logit[:, 0]),
            "receiver's direct effect on the IO logit, with the edge": mean(self.receiver_logit[:, 1]),
            "change of the receiver's direct effect on the IO logit": mean(self.receiver_logit[:, 1] - self.receiver_logit[:, 0]),
        }

    def verdict(self, n_resamples: int = 1000, seed: int = 0) -> str:
        """What the intervals establish, in words: copy suppression only when all three predictions hold."""
        c = self.checks(n_resamples, seed)
        tests = {"the sender raises the IO logit": c["sender's direct effect on the IO logit (clean run)"].low > 0,
                 "the receiver attends more to IO": c["change of the receiver's attention to IO"].low > 0,
                 "the receiver lowers the IO logit more": c["change of the receiver's direct effect on the IO logit"].high < 0}
        holds = [t for t, ok in tests.items() if ok]
        fails = [t for t, ok in tests.items() if not ok]
        if not fails:
            return "consistent with copy suppression: all three predictions hold (95% intervals)"
        text = (f"not shown to be copy suppression: the 95% intervals do not establish that {' or that '.join(fails)}"
                + (f" (established: {', '.join(holds)})" if holds else ""))
        if fails[0] == "the sender raises the IO logit" and c["sender's direct effect on the S logit (clean run)"].high < 0:
            text += ("; the sender lowers the subject's logit instead, so the frame, which needs a copied token, does not "
                     "fit this sender")
        return text


def copy_suppression(model, batch: Batch, sender: Head, receiver: Head) -> CopySuppression:
    """The measurements of :class:`CopySuppression` for one edge."""
    (sender,), (receiver,) = check_heads(model, [sender], "sender"), check_heads(model, [receiver], "receiver")
    if receiver[0] <= sender[0]:
        raise AttributionError(f"receiver L{receiver[0]}H{receiver[1]} is not after sender L{sender[0]}H{sender[1]}")
    if batch.task is not Task.IOI:
        raise AttributionError("copy_suppression reads IOI prompts (the indirect object is the copied token)")
    copied = batch.answers[:, 0]
    clean, corrupted, _, _ = _runs(model, batch, _frozen_names(model) + ["ln_final.hook_scale"])
    q_name, r_name, p_name = (f"blocks.{receiver[0]}.attn.hook_q", result_hook(receiver[0]),
                              f"blocks.{receiver[0]}.attn.hook_pattern")
    with torch.no_grad():
        output = _last(clean[result_hook(sender[0])][:, :, sender[1]], batch.last)
        scale = _last(clean["ln_final.hook_scale"], batch.last)[:, 0]
        sender_logit = torch.stack([project(model, batch, output, scale, batch.answers[:, k]) for k in (0, 1)], 1).cpu()
        _, direct = _run_copies(model, batch, [_direct_patch(model, sender, clean, corrupted)], [q_name])
        edge = {q_name: {receiver[1]: direct[q_name][0][:, :, receiver[1]]}}
        _, runs = _run_copies(model, batch, [{}, edge], [r_name, p_name, "ln_final.hook_scale"])  # corrupted run; with the edge
        logits, attention = [], []
        for k in range(2):
            output = _last(runs[r_name][k][:, :, receiver[1]], batch.last)
            logits.append(project(model, batch, output, _last(runs["ln_final.hook_scale"][k], batch.last)[:, 0], copied))
            attention.append(readout(runs[p_name][k][:, receiver[1]:receiver[1] + 1], batch.corrupted, batch.last, copied[:, None])[:, 0, 0])
    return CopySuppression(sender, receiver, sender_logit, torch.stack(logits, 1).cpu(), torch.stack(attention, 1).cpu())


# --------------------------------------------------------------------------- head sets from data


def find_head_sets(model, batch: Batch, n_movers: int = 3, n_negative: int = 2, n_backup: int = 8,
                   min_share: float = 0.05) -> dict[str, list[Head]]:
    """IOI head sets from data. Name movers and negative name movers by the mean direct effect
    Δ = DLA(clean) − DLA(corrupted); backup name movers by their response to the name movers' ablation.

    Name movers: the ``n_movers`` heads with the largest Δ; negative name movers: the
    ``n_negative`` with the most negative Δ (only heads whose Δ is negative); backup: at
    most ``n_backup`` heads that :func:`backup_response` finds (rule in
    :class:`BackupResponse`), outside the other two sets. The three sets are disjoint. (On
    GPT-2 small use :data:`PUBLISHED_IOI_HEADS`.)
    """
    info = model_info(model)
    delta = (direct_logit_attribution(model, batch, "clean").heads - direct_logit_attribution(model, batch, "corrupted").heads).mean(0)
    order = delta.flatten().argsort(descending=True).tolist()
    as_head = lambda i: (i // info.n_heads, i % info.n_heads)  # noqa: E731
    movers = [as_head(i) for i in order[:n_movers]]
    negative = [as_head(i) for i in order[::-1] if delta.flatten()[i] < 0 and as_head(i) not in movers][:n_negative]
    backup = [h for h in backup_response(model, batch, movers, min_share).heads() if h not in negative][:n_backup]
    return {"name movers": movers, "negative name movers": negative, "backup name movers": backup}


def upstream_heads(model, heads: Sequence[Head], n_layers: int | None = None) -> list[Head]:
    """Every head in a layer below the earliest of ``heads`` (in the ``n_layers`` layers just below it, if given):
    the possible senders into all of them."""
    heads = check_heads(model, heads)
    first = min(l for l, _ in heads)
    start = 0 if n_layers is None else max(0, first - n_layers)
    return [(l, h) for l in range(start, first) for h in range(model_info(model).n_heads)]


def top_senders(paths: Patched, senders: Sequence[Head], k: int, input: int = 0, receiver: int = 0,
                min_share: float = 0.02) -> list[Head]:
    """At most ``k`` senders with the largest share in ``paths`` (from :func:`path_patching`) for one input and receiver
    column, among those whose share is at least ``min_share`` of the gap and whose 95% bootstrap interval lies above 0
    (with fewer than 3 prompts there is no interval, and the share alone decides)."""
    share = paths.share()[input, :, receiver]
    out = []
    for i in share.argsort(descending=True).tolist():
        if len(out) == k or share[i] < min_share:
            break
        low = paths.interval(input, i, receiver).low
        if math.isnan(low) or low > 0:
            out.append(senders[i])
    return out


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


def head_sets(model, batch: Batch, backup_min_share: float = 0.05, **given: str) -> tuple[dict[str, list[Head]], str]:
    """The IOI head sets and a sentence saying where they come from.

    ``given`` may name any of ``name_movers``, ``negative_name_movers``,
    ``backup_name_movers`` as text for :func:`parse_heads` (``"auto"`` or empty: not
    given). Sets not given are the published ones on GPT-2 small, else found from data
    (:func:`find_head_sets`).
    """
    keys = {"name_movers": "name movers", "negative_name_movers": "negative name movers", "backup_name_movers": "backup name movers"}
    unknown = set(given) - set(keys)
    if unknown:
        raise AttributionError(f"unknown head set(s) {', '.join(sorted(unknown))}; give {', '.join(keys)}")
    chosen = {keys[k]: check_heads(model, parse_heads(v), keys[k]) for k, v in given.items() if v and v.strip().lower() != "auto"}
    if is_gpt2_small(model):
        sets = {k: list(v) for k, v in PUBLISHED_IOI_HEADS.items() if k != "S-inhibition"}
        rule = "the published IOI head classes of GPT-2 small (Wang et al. 2023)"
    else:
        sets = find_head_sets(model, batch, min_share=backup_min_share)
        rule = ("found from data: name movers are the 3 heads with the largest mean direct effect on the logit difference "
                "(direct logit attribution on the clean prompts minus on the corrupted ones), negative name movers the 2 with "
                "the most negative one; " + backup_rule(backup_min_share)
                + " (at most 8, largest rise first)")
    if chosen:
        taken = {h for v in chosen.values() for h in v}
        sets = {k: chosen.get(k, [h for h in v if h not in taken]) for k, v in sets.items()}  # the sets stay disjoint
        rule = f"{', '.join(chosen)} as given by the parameters; the others {rule}"
    return sets, rule

"""Head sets: patching them jointly, one by one and as a linear combination; direct logit attribution; path patching.

The IOI circuit (Wang et al. 2023) has *name mover* heads that copy the indirect object's
name to the answer, *negative name movers* that write against it, and *backup* name movers
that take over when the name movers are removed. This module asks how such a set of heads
behaves when patched as a whole, and through which paths its effect flows.

Every function works on a head's **output** (``z @ W_O[h]``, at
``blocks.L.attn.hook_result``), in the denoising frame: the base run is the corrupted
prompt and patched heads take values derived from the clean one; effects are normalised,
(metric − metric(corrupted)) / (metric(clean) − metric(corrupted)), per prompt.

- :func:`patch_heads`: a set patched ``"jointly"`` (each head gets its clean output) or as a
  ``"linear_combination"`` (each head gets its corrupted output plus the set's *mean*
  clean−corrupted output; the set's total output equals the joint patch's, but spread
  evenly over its heads, and so over their layers). :func:`set_effects` adds the sum of
  one-head patches and the fractions of the joint effect each recovers.
- :func:`direct_logit_attribution`: every head's output at the last token, through the final
  norm's scale (of the same run, frozen) and ``W_U``, onto the answer direction
  ``W_U[:, answer] − W_U[:, distractor]``; with the embeddings, the MLPs, the attention
  biases and the final biases, the terms add up to the logit difference exactly.
- :func:`path_patching`: the effect of a sender head's clean output on a receiver head's
  query, key or value input alone, every other head and MLP frozen at the corrupted run.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ig_ap.attribution import AttributionError
from ig_ap.models import model_info
from ig_ap.results import memo
from ig_ap.tasks import Batch, Task, final_logits, normalized

Head = tuple[int, int]

PUBLISHED_IOI_HEADS: dict[str, list[Head]] = {
    "name movers": [(9, 6), (9, 9), (10, 0)],
    "negative name movers": [(10, 7), (11, 10)],
    "backup name movers": [(9, 0), (9, 7), (10, 1), (10, 2), (10, 6), (10, 10), (11, 2), (11, 9)],
    "S-inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
}
"""The IOI head classes of GPT-2 small (Wang et al. 2023), as (layer, head)."""

MODES = ("jointly", "linear_combination")
INPUTS = ("q", "k", "v")


def result_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_result"


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


def _runs(model, batch: Batch, names: Sequence[str]):
    """Clean and corrupted caches of ``names`` and the two metrics."""
    keep = set(names)
    with torch.no_grad():
        clean_logits, clean = model.run_with_cache(batch.clean, names_filter=lambda n: n in keep)
        corrupted_logits, corrupted = model.run_with_cache(batch.corrupted, names_filter=lambda n: n in keep)
    return clean, corrupted, batch.score(clean_logits), batch.score(corrupted_logits)


def _set_outputs(heads: Sequence[Head], names, clean, corrupted, mode: str) -> dict[str, dict[int, Tensor]]:
    """Per hook name, per head index: the value the head's output takes under ``mode``."""
    if mode not in MODES:
        raise AttributionError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "jointly":
        return {name: {h: clean[name][:, :, h] for (l, h) in heads if result_hook(l) == name} for name in names}
    delta = torch.stack([clean[result_hook(l)][:, :, h] - corrupted[result_hook(l)][:, :, h] for l, h in heads]).mean(0)
    return {name: {h: corrupted[name][:, :, h] + delta for (l, h) in heads if result_hook(l) == name} for name in names}


def _overwrite(activation, hook, values: dict[int, Tensor]):
    activation = activation.clone()
    for head, value in values.items():
        activation[:, :, head] = value
    return activation


def patch_heads(model, batch: Batch, heads: Sequence[Head], mode: str = "jointly", runs=None) -> Float[Tensor, "prompt"]:
    """The normalised metric of the corrupted run with ``heads`` patched together (see the module doc for ``mode``).

    ``runs``: the clean and corrupted caches and metrics from ``_runs`` over (at least)
    the heads' layers, to reuse across many patches of one batch.
    """
    heads = check_heads(model, heads)
    names = sorted({result_hook(l) for l, _ in heads})
    clean, corrupted, m_clean, m_corrupted = runs or _runs(model, batch, names)
    values = _set_outputs(heads, names, clean, corrupted, mode)
    hooks = [(name, functools.partial(_overwrite, values=values[name])) for name in names]
    with torch.no_grad():
        logits = model.run_with_hooks(batch.corrupted, fwd_hooks=hooks)
    return normalized(batch.score(logits), m_clean, m_corrupted).cpu()


@dataclass(frozen=True)
class SetEffects:
    """Mean normalised effects of one head set: the sum of one-head patches, the joint patch, the linear combination."""

    heads: list[Head]
    one_by_one: float
    jointly: float
    linear_combination: float

    def values(self) -> tuple[float, float, float]:
        """(one by one, jointly, linear combination): the numbers, e.g. to store them."""
        return self.one_by_one, self.jointly, self.linear_combination

    @property
    def fractions(self) -> dict[str, float]:
        """Each patch's effect as a fraction of the joint patch's (NaN where the joint effect is under 5% of the gap)."""
        if abs(self.jointly) < 0.05:
            return {"one by one (summed)": float("nan"), "linear combination": float("nan")}
        return {"one by one (summed)": self.one_by_one / self.jointly, "linear combination": self.linear_combination / self.jointly}


def set_effects(model, batch: Batch, heads: Sequence[Head]) -> SetEffects:
    """Patch ``heads`` one by one (effects summed), jointly, and as a linear combination; means over prompts."""
    heads = check_heads(model, heads)
    runs = _runs(model, batch, sorted({result_hook(l) for l, _ in heads}))  # once for every patch below
    singles = sum(patch_heads(model, batch, [h], runs=runs).mean().item() for h in heads)
    return SetEffects(heads, singles, patch_heads(model, batch, heads, runs=runs).mean().item(),
                      patch_heads(model, batch, heads, "linear_combination", runs=runs).mean().item())


def cached_set_effects(model, dataset, heads: Sequence[Head]) -> SetEffects:
    """:func:`set_effects` on all of ``dataset``'s prompts, from the results cache when model, prompts, heads and code are unchanged."""
    heads = check_heads(model, heads)
    value = memo(model, dataset, "set_effects", lambda: torch.tensor(set_effects(model, dataset.batch(), heads).values()),
                 modules=("heads",), heads=[list(h) for h in heads])
    return SetEffects(heads, *value.tolist())


def cached_path_patching(model, dataset, senders: Sequence[Head], receivers: Sequence[Head]) -> Float[Tensor, "input sender receiver prompt"]:
    """:func:`path_patching` on all of ``dataset``'s prompts, from the results cache when nothing it depends on changed."""
    senders, receivers = check_heads(model, senders, "senders"), check_heads(model, receivers, "receivers")
    return memo(model, dataset, "path_patching", lambda: path_patching(model, dataset.batch(), senders, receivers),
                modules=("heads",), senders=[list(h) for h in senders], receivers=[list(h) for h in receivers])


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


def project(model, batch: Batch, outputs: Float[Tensor, "prompt ... d_model"], scale: Float[Tensor, "prompt"]) -> Float[Tensor, "prompt ..."]:
    """Direct logit attribution of residual-stream terms at the last token: through the final norm
    (centring for LayerNorm, division by ``scale``, the weight) and onto the answer direction."""
    weight, _, centred = _final_norm(model)
    if centred:
        outputs = outputs - outputs.mean(-1, keepdim=True)
    direction = _answer_directions(model, batch) * weight  # [prompt, d_model]
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


def patched_direct_effects(model, batch: Batch, heads: Sequence[Head], mode: str = "jointly") -> Float[Tensor, "prompt head"]:
    """Direct logit attribution of each head of the set under a patch, in the patched run's final-norm scale.

    Under the linear combination the heads' outputs sum to the joint patch's, so their
    direct effects sum to the joint patch's too when the scale is the same (the check the
    original notebook left to do); the scale is each patched run's own.
    """
    heads = check_heads(model, heads)
    names = sorted({result_hook(l) for l, _ in heads})
    clean, corrupted, _, _ = _runs(model, batch, names)
    values = _set_outputs(heads, names, clean, corrupted, mode)
    hooks = [(name, functools.partial(_overwrite, values=values[name])) for name in names]
    with torch.no_grad():
        scale = _patched_scale(model, batch, hooks)
    rows = torch.arange(len(batch))
    outputs = torch.stack([values[result_hook(l)][h][rows, batch.last] for l, h in heads], 1)
    return project(model, batch, outputs, scale).cpu()


def _patched_scale(model, batch, hooks) -> Float[Tensor, "prompt"]:
    """The final norm's scale at each prompt's last token, in the corrupted run with ``hooks``."""
    store = {}

    def keep(activation, hook):
        store["scale"] = activation.detach()
        return activation

    model.run_with_hooks(batch.corrupted, fwd_hooks=list(hooks) + [("ln_final.hook_scale", keep)])
    return store["scale"][torch.arange(len(batch)), batch.last][:, 0]


# --------------------------------------------------------------------------- path patching


def path_patching(
    model, batch: Batch, senders: Sequence[Head], receivers: Sequence[Head], inputs: Sequence[str] = INPUTS
) -> Float[Tensor, "input sender receiver prompt"]:
    """Effect of each sender's clean output on each receiver's query, key or value input alone.

    For one sender: run the corrupted prompt with the sender's output set to its clean value
    and every other head's output and every MLP's output frozen at their corrupted values,
    so the sender reaches later layers only directly, through the residual stream; record
    each receiver's q, k and v there. Then, for each receiver and input, run the corrupted
    prompt with only that input of that receiver replaced by the recorded value (all else
    recomputed) and measure the normalised metric. A receiver in the sender's layer or
    below cannot be reached: its effect is exactly 0. In models whose query heads share
    key/value heads (grouped-query attention), a receiver's k and v are its key/value
    head's, shared with the other query heads of its group.
    """
    senders, receivers = check_heads(model, senders, "senders"), check_heads(model, receivers, "receivers")
    unknown = set(inputs) - set(INPUTS)
    if unknown or not inputs:
        raise AttributionError(f"inputs must be some of {', '.join(INPUTS)}, got {list(inputs)!r}")
    info = model_info(model)
    group = info.n_heads // info.n_kv_heads
    L = info.n_layers
    frozen_names = [result_hook(l) for l in range(L)] + [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    clean, corrupted, m_clean, m_corrupted = _runs(model, batch, frozen_names)
    qkv_name = lambda layer, x: f"blocks.{layer}.attn.hook_{x}"  # noqa: E731
    out = torch.zeros(len(inputs), len(senders), len(receivers), len(batch))

    def freeze(activation, hook, name, sender_head=None):
        value = corrupted[name].clone()
        if sender_head is not None:
            value[:, :, sender_head] = clean[name][:, :, sender_head]
        return value

    def record(activation, hook, key, store):
        store[key] = activation.detach().clone()
        return activation

    def replace(activation, hook, index, value):
        activation = activation.clone()
        activation[:, :, index] = value[:, :, index]
        return activation

    with torch.no_grad():
        for s, (s_layer, s_head) in enumerate(senders):
            store: dict = {}
            hooks = [(name, functools.partial(freeze, name=name, sender_head=s_head if name == result_hook(s_layer) else None))
                     for name in frozen_names]
            hooks += [(qkv_name(l, x), functools.partial(record, key=(l, x), store=store))
                      for l in sorted({l for l, _ in receivers}) for x in inputs]
            model.run_with_hooks(batch.corrupted, fwd_hooks=hooks)
            for r, (r_layer, r_head) in enumerate(receivers):
                if r_layer <= s_layer:
                    continue  # not downstream of the sender: exactly no effect
                for i, x in enumerate(inputs):
                    index = r_head if x == "q" else r_head // group
                    hook = (qkv_name(r_layer, x), functools.partial(replace, index=index, value=store[r_layer, x]))
                    logits = model.run_with_hooks(batch.corrupted, fwd_hooks=[hook])
                    out[i, s, r] = normalized(batch.score(logits), m_clean, m_corrupted).cpu()
    return out


# --------------------------------------------------------------------------- head sets from data


def find_head_sets(model, batch: Batch, n_movers: int = 3, n_negative: int = 2, n_backup: int = 8) -> dict[str, list[Head]]:
    """IOI head sets from data: ranked by the mean direct effect Δ = DLA(clean) − DLA(corrupted).

    Name movers: the ``n_movers`` heads with the largest Δ; negative name movers: the
    ``n_negative`` with the most negative Δ (only heads whose Δ is negative); backup: the
    next ``n_backup`` heads by Δ after the name movers, among those whose Δ is positive
    (a head that writes against the answer is no backup name mover; fewer when fewer are
    left). The three sets are disjoint. (On GPT-2 small use :data:`PUBLISHED_IOI_HEADS`.)
    """
    info = model_info(model)
    delta = (direct_logit_attribution(model, batch, "clean").heads - direct_logit_attribution(model, batch, "corrupted").heads).mean(0)
    order = delta.flatten().argsort(descending=True).tolist()
    as_head = lambda i: (i // info.n_heads, i % info.n_heads)  # noqa: E731
    movers = [as_head(i) for i in order[:n_movers]]
    negative = [as_head(i) for i in order[::-1] if delta.flatten()[i] < 0 and as_head(i) not in movers][:n_negative]
    backup = [as_head(i) for i in order[n_movers:] if delta.flatten()[i] > 0][:n_backup]
    return {"name movers": movers, "negative name movers": negative, "backup name movers": backup}


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


def head_sets(model, batch: Batch, **given: str) -> tuple[dict[str, list[Head]], str]:
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
        sets = find_head_sets(model, batch)
        rule = ("found from data: name movers are the 3 heads with the largest mean direct effect on the logit difference "
                "(direct logit attribution on the clean prompts minus on the corrupted ones), negative name movers the 2 with "
                "the most negative one, backup name movers the next 8 after the name movers")
    if chosen:
        taken = {h for v in chosen.values() for h in v}
        sets = {k: chosen.get(k, [h for h in v if h not in taken]) for k, v in sets.items()}  # the sets stay disjoint
        rule = f"{', '.join(chosen)} as given by the parameters; the others {rule}"
    return sets, rule

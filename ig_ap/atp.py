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

AtP* (Kramár et al. 2024) corrects AtP's two kinds of false negatives, each switched on and
off by its own option of :func:`atp_star`:

- *QK fix* (``qk_fix``): a patch that changes the queries or keys of an attention head moves
  its softmax, which AtP linearises, badly where attention saturates. The paper computes the
  new attention pattern exactly and linearises only beyond it. Here a component is a head's
  output (or a neuron), so what its patch changes are the queries and keys of the heads of
  the *later* layers: for every head component c and every later layer l, the exact
  pattern of layer l with c's change added to its input residual stream (c's direct write,
  the rest of the run unchanged) replaces AtP's linear term for that path::

      AtP*_c = AtP_c + Σ_{l > layer(c)} [⟨∂m/∂A_l, A_l(r_l + Δr_c) − A_l(r_l)⟩ − ⟨∂m/∂r_l|_{through A_l}, Δr_c⟩]

  where A_l is layer l's attention pattern (every head, query and key position), r_l its
  input residual stream in the base run and Δr_c the change of c's output written into it.
  Exact: the pattern change along c's direct path. Linear: everything after the pattern
  (∂m/∂A_l at the base run), the paths through intermediate components, and the paths that
  do not go through a later pattern (those are AtP's). Neurons write into the residual
  stream too, but one exact pattern per neuron and later layer costs more than patching
  them: their scores stay AtP's (``qk_fix`` touches heads only).
- *GradDrop* (``grad_drop``): a component whose direct and indirect effects cancel has a
  small AtP. For every block ℓ, AtP is computed again with the gradient through block ℓ's
  attention and MLP outputs dropped (the residual stream still carries it past), which
  breaks a cancellation that runs through ℓ; the score is the paper's combination
  (1/(L−1)) Σ_ℓ |AtP_{drop ℓ}| (a component's own block gives 0, hence L − 1). The score is
  then a magnitude (≥ 0), for ranking components, not a signed estimate of AP.

With both off, :func:`atp_star` is AtP exactly. All of it comes from one forward and
backward pass over ``1 + L`` copies of the base run (with GradDrop), one more per later
layer for the gradient through its pattern, and forward passes of single attention layers
for the exact patterns: far fewer than AP's one pass per component.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ig_ap.attribution import Attribution, AttributionError, base_and_source, clean_and_corrupted, hook_name, prepare
from ig_ap.replay import MEMORY_MB, copies_per_pass, run_from, trace
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
    return _attribute(model, batch, metric, direction, components, False, False, layers=layers,
                      internal_batch_size=internal_batch_size, memory_mb=memory_mb, share_prefix=share_prefix,
                      device=device, progress=progress, meta=meta)


def atp_star(
    model,
    batch: Batch,
    metric: Callable | None = None,
    direction: str = "denoising",
    components: str | Sequence[str] = ("heads", "neurons"),
    *,
    qk_fix: bool = True,
    grad_drop: bool = True,
    layers: Sequence[int] | None = None,
    internal_batch_size: int | None = None,
    memory_mb: float = MEMORY_MB,
    share_prefix: bool = True,
    device: str | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Attribution:
    """AtP* (Kramár et al. 2024): AtP with the attention softmax of later layers recomputed exactly (``qk_fix``) and
    the paper's GradDrop combination of backward passes with one block's gradient dropped (``grad_drop``).

    See the module's text for what each fix computes and which part is exact. Arguments and
    result as :func:`attribution_patching` (``internal_batch_size``: prompts per pass); with
    ``grad_drop`` the scores are magnitudes (≥ 0); with both fixes off this is AtP exactly.
    """
    for name, value in (("qk_fix", qk_fix), ("grad_drop", grad_drop)):
        if not isinstance(value, bool):
            raise AttributionError(f"{name} must be True or False, got {value!r}")
    return _attribute(model, batch, metric, direction, components, qk_fix, grad_drop, layers=layers,
                      internal_batch_size=internal_batch_size, memory_mb=memory_mb, share_prefix=share_prefix,
                      device=device, progress=progress, meta=meta)


def _drop_gradient(activation, hook, rows):
    """The same values; no gradient flows back through the rows in ``rows`` (one copy of the batch)."""
    return torch.where(rows, activation.detach(), activation)


def _attribute(model, batch, metric, direction, components, qk_fix: bool, grad_drop: bool, **shared) -> Attribution:
    """AtP, with AtP*'s fixes where asked: the one pass of the base run (1 + L copies with GradDrop), then the QK fix."""
    setup = prepare(model, batch, metric, direction, components, **shared)
    info, metric, batch = setup.info, setup.metric, setup.batch
    L = info.n_layers
    if grad_drop and L < 2:
        raise AttributionError("grad_drop needs a model of at least 2 layers (it averages over the blocks but a component's own)")
    names = [hook_name(k, l) for l in setup.layers for k in setup.components]
    fixed = [l for l in setup.layers if l < L - 1] if qk_fix and "heads" in setup.components else []  # head layers with later patterns
    results = [f"blocks.{l}.attn.hook_result" for l in fixed]
    patterns = [f"blocks.{l}.attn.hook_pattern" for l in range(min(fixed) + 1, L)] if fixed else []
    copies = 1 + (L if grad_drop else 0)  # copy 0: AtP's gradient; copy 1 + ℓ: block ℓ's gradient dropped
    P = len(batch)
    rows = min(P, setup.internal_batch_size or max(1, setup.rows_per_pass(model, batch.clean.shape[1], L, True) // copies))  # prompts per pass
    setup.rows.append(rows)
    scores = {kind: setup.empty(kind) for kind in setup.components}
    base_metric, source_metric = torch.zeros(P), torch.zeros(P)
    prefixes = []
    desc = "AtP*" if qk_fix or grad_drop else "AtP"
    for start in tqdm(range(0, P, rows), desc=f"{desc} {setup.direction}", unit="pass", disable=not setup.progress):
        index = list(range(start, min(start + rows, P)))
        chunk = batch.select(index)
        n = len(index)
        base_tokens, source_tokens = base_and_source(setup.direction, chunk.clean, chunk.corrupted)
        prefix = chunk.first_difference() if setup.share_prefix else 0
        prefixes.append(prefix)
        with torch.no_grad():
            source = trace(model, source_tokens, chunk.last, names + results, prefix=prefix)
            base = trace(model, base_tokens, chunk.last, results, prefix=prefix)
        kept: dict[str, torch.Tensor] = {}
        hooks = [("blocks.0.hook_resid_pre", _leaf)] + [(n_, functools.partial(_keep, name=n_, store=kept)) for n_ in names + patterns]
        if grad_drop:
            copy = torch.arange(copies * n, device=setup.device) // n
            for block in range(L):
                rows_of = (copy == 1 + block).view(-1, 1, 1)
                hooks += [(f"blocks.{block}.hook_attn_out", functools.partial(_drop_gradient, rows=rows_of)),
                          (f"blocks.{block}.hook_mlp_out", functools.partial(_drop_gradient, rows=rows_of))]
        with torch.enable_grad():
            values = metric(run_from(model, base, 0, copies, hooks, last=chunk.last).view(copies, n, -1), chunk)
            wanted = names + patterns
            grads = torch.autograd.grad(values.sum(), [kept[n_] for n_ in wanted], allow_unused=True)
        grads = {n_: (torch.zeros_like(kept[n_]) if g is None else g) for n_, g in zip(wanted, grads)}
        base_metric[index] = values[0].detach().float().cpu()
        source_metric[index] = metric(source.final, chunk).float().cpu()
        per_copy: dict[str, torch.Tensor] = {}  # [copy, prompt, component] per hook
        for name in names:
            kind = "heads" if name.endswith("hook_z") else "neurons"
            base_value = kept[name].detach()[:n]
            change = source.cache[name] - base_value  # positions after the prefix; before it, 0
            gradient = grads[name].view(copies, *base_value.shape)
            per_copy[name] = (change.unsqueeze(0) * gradient).sum(dim=(2, 4) if kind == "heads" else (2,))
        if fixed:
            _qk_fix(model, setup, base, source, kept, grads, per_copy, fixed, copies, n)
        for name in names:
            kind = "heads" if name.endswith("hook_z") else "neurons"
            layer = int(name.split(".")[1])
            estimate = per_copy[name].double()
            if grad_drop:
                estimate = estimate[1:].abs().sum(0) / (L - 1)
            else:
                estimate = estimate[0]
            scores[kind][index, layer] = estimate.float().cpu()
    clean_metric, corrupted_metric = clean_and_corrupted(setup.direction, base_metric, source_metric)
    method = "attribution_patching_star" if qk_fix or grad_drop else "attribution_patching"
    options = {"qk_fix": qk_fix, "grad_drop": grad_drop} if method != "attribution_patching" else {}
    return setup.result(method, scores, clean_metric, corrupted_metric, shared_prefix=min(prefixes), **options)


def _qk_fix(model, setup, base, source, kept, grads, per_copy, fixed: list[int], copies: int, n: int) -> None:
    """Add the QK fix to ``per_copy``'s head estimates (every copy: AtP's and GradDrop's), in place."""
    L = setup.info.n_layers
    H = setup.info.n_heads
    # c's direct write into the residual stream, per head component: [prompt, pos, head, d_model]
    writes = {l: source.cache[f"blocks.{l}.attn.hook_result"] - base.cache[f"blocks.{l}.attn.hook_result"] for l in fixed}
    positions = base.resid_pre(0).shape[1]
    for later in range(min(fixed) + 1, L):
        pattern_name = f"blocks.{later}.attn.hook_pattern"
        g_pattern = grads[pattern_name].view(copies, n, *grads[pattern_name].shape[1:])  # ∂m/∂A [copy, prompt, head, q, k]
        own = kept[pattern_name].detach()[:n]  # the base run's pattern
        # the gradient through this layer's pattern only, back to its input residual stream: [copy, prompt, pos, d_model]
        start = {}
        hooks = [(f"blocks.{later}.hook_resid_pre", functools.partial(_start_here, store=start))]
        with torch.enable_grad():
            pattern = run_from(model, base, later, copies, hooks, until=pattern_name)
            (through,) = torch.autograd.grad(pattern, start["x"], grad_outputs=grads[pattern_name])
        through = through.view(copies, n, *through.shape[1:])
        earlier = [l for l in fixed if l < later]
        components = [(l, h) for l in earlier for h in range(H)]
        per_pass = copies_per_pass(model, n, positions, 1, False, setup.memory_mb)  # components per pass
        for begin in range(0, len(components), per_pass):
            group = components[begin:begin + per_pass]
            delta = torch.stack([writes[l][:, :, h] for l, h in group])  # [component, prompt, pos, d_model]
            moved = base.resid_pre(later).unsqueeze(0) + delta
            with torch.no_grad():
                exact = run_from(model, base, later, len(group),
                                 [(f"blocks.{later}.hook_resid_pre", functools.partial(_set, value=moved.flatten(0, 1)))],
                                 until=pattern_name)
            change = exact.view(len(group), n, *own.shape[1:]) - own.unsqueeze(0)
            exact_term = torch.einsum("kphqt,cphqt->kcp", g_pattern.double(), change.double())
            linear_term = torch.einsum("kptd,cptd->kcp", through.double(), delta.double())
            correction = (exact_term - linear_term).to(per_copy[hook_name("heads", group[0][0])].dtype)
            for i, (l, h) in enumerate(group):
                per_copy[hook_name("heads", l)][:, :, h] += correction[:, i]


def _start_here(activation, hook, store):
    store["x"] = activation.detach().requires_grad_(True)
    return store["x"]


def _set(activation, hook, value):
    return value

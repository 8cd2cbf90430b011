"""Re-run the upper layers of a model from a recorded forward pass, on a widened batch.

Every attribution kernel asks the same question many times: what does the metric become
when one layer's activation is changed (a component patched, or a point on the IG path)?
Everything *below* that layer is the same in all those runs, so it is computed once.
:func:`trace` runs the model once on a batch and records what each block received (its
input residual stream and the keyword arguments the Hugging Face layer gets: attention
mask, rotary position embeddings, ...). :func:`run_from` then calls the blocks from a
given layer up, on a batch widened to ``copies × prompts`` rows (row ``c * P + p`` is copy
``c`` of prompt ``p``), with hooks firing as in a normal forward pass, and returns the
logits at each prompt's last token only (the unembedding of the other positions is never
needed by a metric).

Both go through the bridge's own block modules, so every hook point
(``blocks.L.attn.hook_z``, ``blocks.L.mlp.hook_post``, ...) fires exactly as in
``model(tokens)``, and the numbers equal a full forward pass (checked in the tests).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

Hook = tuple[str, Callable]


@dataclass
class Trace:
    """What each block received during one forward pass of ``tokens`` (no gradients kept).

    With ``prefix > 0`` the first ``prefix`` positions were run once with a key/value cache
    and everything recorded (block inputs, activations) covers the positions from
    ``prefix`` on only; ``prefix_kv`` holds each layer's keys and values of the prefix.
    """

    tokens: Int[Tensor, "prompt pos"]
    block_inputs: list[tuple[tuple, dict]]  # per layer: (args, kwargs) of the block call
    cache: dict[str, Tensor]  # the activations asked for, by hook name (positions prefix…)
    final: Float[Tensor, "prompt vocab"]  # logits at each prompt's last token
    prefix: int = 0
    prefix_kv: list[tuple[Tensor, Tensor]] | None = None

    @property
    def n_prompts(self) -> int:
        return self.tokens.shape[0]

    def resid_pre(self, layer: int) -> Float[Tensor, "prompt pos d_model"]:
        return self.block_inputs[layer][0][0]


def _is_cache(value: Any) -> bool:
    return hasattr(value, "get_seq_length")  # a transformers Cache object


class PrefixCache:
    """A key/value cache holding a shared prefix, repeated for ``copies`` copies of the batch.

    Blocks call ``update(keys, values, layer)`` with the keys and values of the positions
    they compute; they get back the prefix's prepended. Nothing is stored, so one object
    serves any number of passes.
    """

    def __init__(self, prefix_kv: list[tuple[Tensor, Tensor]], copies: int, layers: Sequence[int]):
        rep = lambda t: t.repeat(copies, *([1] * (t.dim() - 1))) if copies > 1 else t  # noqa: E731
        self.kv = {l: (rep(prefix_kv[l][0]), rep(prefix_kv[l][1])) for l in layers}
        self.length = prefix_kv[0][0].shape[-2]

    def update(self, keys, values, layer_idx, *args, **kwargs):
        k, v = self.kv[layer_idx]
        return torch.cat([k.to(keys.dtype), keys], dim=-2), torch.cat([v.to(values.dtype), values], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


@torch.no_grad()
def trace(
    model,
    tokens: Int[Tensor, "prompt pos"],
    last: Int[Tensor, "prompt"],
    names: Sequence[str] = (),
    prefix: int = 0,
) -> Trace:
    """Run ``model`` on ``tokens`` once, recording every block's inputs and the activations ``names``.

    ``prefix``: run the first ``prefix`` positions once through a key/value cache and record
    only the positions after it (see :class:`Trace`). ``last`` must lie at or after ``prefix``.
    """
    if prefix and int(last.min()) < prefix:
        raise ValueError(f"prefix {prefix} reaches past a prompt's last token ({int(last.min())})")
    block_inputs: list = [None] * len(model.blocks)

    def record(_module, args, kwargs, layer):
        block_inputs[layer] = (tuple(args), dict(kwargs))

    handles = [
        block.register_forward_pre_hook(functools.partial(record, layer=i), with_kwargs=True)
        for i, block in enumerate(model.blocks)
    ]
    cache: dict[str, Tensor] = {}

    def keep(tensor, hook, name):  # bind the name: hook.name is the underlying module's name
        cache[name] = tensor.detach().clone()
        return tensor

    prefix_kv = None
    try:
        if prefix:
            for handle in handles:  # the prefix pass is not recorded
                handle.remove()
            _, kv_cache = model(tokens[:, :prefix], return_type="logits_and_cache")
            prefix_kv = [(layer.keys.clone(), layer.values.clone()) for layer in kv_cache.layers]
            handles = [
                block.register_forward_pre_hook(functools.partial(record, layer=i), with_kwargs=True)
                for i, block in enumerate(model.blocks)
            ]
            with model.hooks(fwd_hooks=[(n, functools.partial(keep, name=n)) for n in names]):
                logits = model(tokens[:, prefix:], return_type="logits", past_key_values=kv_cache)
        else:
            with model.hooks(fwd_hooks=[(n, functools.partial(keep, name=n)) for n in names]):
                logits = model(tokens, return_type="logits")
    finally:
        for handle in handles:
            handle.remove()
    final = logits[torch.arange(tokens.shape[0], device=logits.device), (last - prefix).to(logits.device)]
    return Trace(tokens=tokens, block_inputs=block_inputs, cache=cache, final=final, prefix=prefix, prefix_kv=prefix_kv)


def _widen(value: Any, n_prompts: int, copies: int, kv: Any = None) -> Any:
    """Repeat the batch dimension of a recorded block argument for ``copies`` copies of the batch."""
    if _is_cache(value):
        return kv  # the prefix cache, or none: the blocks see the whole sequence
    if torch.is_tensor(value):
        if copies > 1 and value.dim() > 0 and value.shape[0] == n_prompts and n_prompts > 1:
            return value.repeat(copies, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_widen(v, n_prompts, copies, kv) for v in value)
    if isinstance(value, list):
        return [_widen(v, n_prompts, copies, kv) for v in value]
    if isinstance(value, dict):
        return {k: _widen(v, n_prompts, copies, kv) for k, v in value.items()}
    return value


def run_from(
    model,
    trace: Trace,
    layer: int,
    copies: int,
    fwd_hooks: Sequence[Hook] = (),
    last: Int[Tensor, "prompt"] | None = None,
    until: str | None = None,
) -> Float[Tensor, "row vocab"]:
    """Run blocks ``layer`` … end on ``copies`` copies of the traced batch; logits at each row's last token.

    Block ``layer`` gets the traced residual stream, repeated (hooks change what the blocks
    compute from there). With a traced prefix, only the positions after it are run (hooks
    see those positions only) and ``last`` is still counted from position 0. Row ``c * P +
    p`` is copy ``c`` of prompt ``p``: ``.view(copies, P, vocab)`` gives what a task metric
    reads. Gradients flow when the caller enables them. ``until``: a hook point of block
    ``layer`` (``"blocks.3.attn.hook_pattern"``): the pass stops there and returns that
    activation (after the hooks on it), so only the part of the block below it is computed.
    """
    if until is not None:
        return _run_until(model, trace, layer, copies, fwd_hooks, until)
    hidden, widened = _widened(trace, range(layer, len(model.blocks)), copies)
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        x = hidden
        for l in range(layer, len(model.blocks)):
            args, kwargs = widened[l]
            out = model.blocks[l](x, *args, **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        if last is not None:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, (last - trace.prefix).to(x.device).repeat(copies)][:, None]
        return model.unembed(model.ln_final(x))[:, -1] if last is not None else model.unembed(model.ln_final(x))


def _widened(trace: Trace, layers: Sequence[int], copies: int) -> tuple[Tensor, dict[int, tuple[Any, dict]]]:
    """The traced residual stream entering ``layers[0]``, repeated for ``copies`` copies, and each layer's block
    arguments widened to match (the prefix cache shared; the blocks never write a cache of their own)."""
    resid = trace.resid_pre(layers[0])
    hidden = resid.repeat(copies, 1, 1) if copies > 1 else resid
    kv = PrefixCache(trace.prefix_kv, copies, layers) if trace.prefix else None
    calls = {}
    for l in layers:
        args = _widen(trace.block_inputs[l][0][1:], trace.n_prompts, copies, kv)
        kwargs = _widen(trace.block_inputs[l][1], trace.n_prompts, copies, kv)
        calls[l] = (args, {**kwargs, "use_cache": False} if "use_cache" in kwargs else kwargs)
    return hidden, calls


class _Reached(Exception):
    """Raised by the hook at ``until`` to stop a pass there, carrying the activation."""

    def __init__(self, value: Tensor):
        super().__init__("reached")
        self.value = value


def _stop(activation, hook):
    raise _Reached(activation)


def _run_until(model, trace: Trace, layer: int, copies: int, fwd_hooks: Sequence[Hook], until: str) -> Tensor:
    if not until.startswith(f"blocks.{layer}."):
        raise ValueError(f"until={until!r} is not a hook point of block {layer}")
    hidden, widened = _widened(trace, [layer], copies)
    args, kwargs = widened[layer]
    try:
        with model.hooks(fwd_hooks=list(fwd_hooks) + [(until, _stop)]):
            model.blocks[layer](hidden, *args, **kwargs)
    except _Reached as reached:
        return reached.value
    raise ValueError(f"the pass through block {layer} never reached {until!r}")


MEMORY_MB = 1024
"""The default memory budget (MiB) of one pass of patched copies: every kernel and every patching function."""


def rows_per_pass(model, n_positions: int, n_layers: int, grad: bool, memory_mb: float = MEMORY_MB) -> int:
    """How many rows (prompt × component or prompt × step) fit a pass within ``memory_mb`` (a rough bound)."""
    cfg = model.cfg
    per_layer = n_positions * (4 * cfg.d_model + 2 * cfg.d_mlp + 3 * cfg.n_heads * (n_positions + cfg.d_head))
    per_row = 4 * per_layer * (n_layers if grad else 2) + 4 * cfg.d_vocab
    return max(1, int(memory_mb * 2**20 // per_row))


def copies_per_pass(model, n_prompts: int, n_positions: int, n_layers: int, grad: bool = False,
                    memory_mb: float | None = None, internal_batch_size: int | None = None) -> int:
    """How many copies of a batch of ``n_prompts`` one pass of :func:`run_from` may hold: at least one.

    The one batching rule of the package: every pass that runs patched copies of a batch
    (the kernels' components and IG points, head patches, component sets, path patches)
    takes ``internal_batch_size`` rows if given, else the rows that fit ``memory_mb``
    (:data:`MEMORY_MB` by default) over ``n_layers`` layers of ``n_positions`` positions,
    and divides them by the prompts.
    """
    rows = internal_batch_size or rows_per_pass(model, n_positions, n_layers, grad, MEMORY_MB if memory_mb is None else memory_mb)
    return max(1, rows // max(1, n_prompts))

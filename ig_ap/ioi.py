"""The IOI circuit read from head measurements: name movers, backups, S-inhibition, copy suppression.

Wang et al. (2023) describe how GPT-2 small does indirect object identification: *name
mover* heads copy the indirect object's (IO's) name to the answer, *negative name movers*
write against it, *backup* name movers take over when the name movers are removed, and
*S-inhibition* heads tell the name movers' queries which name not to copy. This module
reads those roles out of the measurements of :mod:`ig_ap.heads` (direct logit
attribution, patches of head sets, path patching, attention readout):

- :data:`PUBLISHED_IOI_HEADS` and :func:`is_gpt2_small`: the published classes, used on GPT-2 small;
- :func:`head_sets` and :func:`find_head_sets`: the classes from data on any other model;
- :func:`backup_response`: backup name movers by their response to the name movers' ablation;
- :func:`mover_roles`: whether a name mover copies IO or pushes S down;
- :func:`top_senders`: S-inhibition candidates from path patching to the name movers' queries;
- :func:`negative_edges` and :func:`copy_suppression`: what a negative edge's receiver does to
  the token its sender copies (McDougall et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ig_ap.analysis import Interval, Patched, mean_interval
from ig_ap.attribution import AttributionError
from ig_ap.heads import (Head, at_last, check_heads, clean_and_corrupted_runs, direct_logit_attribution, direct_patch,
                         frozen_names, parse_heads, project, ranked_heads, readout, result_hook, run_patches)
from ig_ap.models import model_info
from ig_ap.tasks import Batch, Task

PUBLISHED_IOI_HEADS: dict[str, list[Head]] = {
    "name movers": [(9, 6), (9, 9), (10, 0)],
    "negative name movers": [(10, 7), (11, 10)],
    "backup name movers": [(9, 0), (9, 7), (10, 1), (10, 2), (10, 6), (10, 10), (11, 2), (11, 9)],
    "S-inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
}
"""The IOI head classes of GPT-2 small (Wang et al. 2023), as (layer, head)."""

def is_gpt2_small(model) -> bool:
    """True for GPT-2 small (12 layers × 12 heads, d_model 768, the ``gpt2`` checkpoint)."""
    info = model_info(model)
    return info.hf_name in ("gpt2", "openai-community/gpt2") or (
        (info.n_layers, info.n_heads, info.d_model, info.d_vocab) == (12, 12, 768, 50257)
    )


# --------------------------------------------------------------------------- backup name movers


@dataclass(frozen=True)
class BackupResponse:
    """How every head's direct effect responds when the name movers are mean-ablated, per prompt.

    ``rise[p, l, h]``: head (l, h)'s direct logit attribution in the ablated clean run minus
    in the clean run (both in their own run's final-norm scale); ``lost[p]``: the direct
    effect the name movers lost. A head is a backup name mover when its mean rise is at
    least ``min_share`` of the mean loss and its 95% interval lies above 0
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
        return mean_interval(self.rise[:, head[0], head[1]])

    def ranked(self) -> list[Head]:
        """Every head but the ablated movers, largest mean rise first."""
        return [h for h in ranked_heads(self.rise.mean(0)) if h not in self.movers]

    def heads(self, n_resamples: int = 1000, seed: int = 0) -> list[Head]:
        """The backup name movers by the rule above, largest mean rise first."""
        mean = self.rise.mean(0)
        out = []
        for head in ranked_heads(mean):
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
            "with a 95% interval above 0")


def backup_response(model, batch: Batch, movers: Sequence[Head], min_share: float = 0.05,
                    memory_mb: float | None = None) -> BackupResponse:
    """Every head's response to the mean-ablation of ``movers`` (Wang et al. 2023's definition of backup name movers).

    The clean run and the clean run with each mover's output at the last token replaced by
    its mean output at the last token over the corrupted prompts, in as few passes as fit
    ``memory_mb`` (:func:`ig_ap.heads.run_patches`); every head's output at the last token and
    the final norm's scale are read in both. See :class:`BackupResponse`.
    """
    movers = check_heads(model, movers, "name movers")
    if not 0 < min_share < 1:
        raise AttributionError(f"min_share must lie in (0, 1), got {min_share!r}")
    runs = clean_and_corrupted_runs(model, batch, sorted({result_hook(l) for l, _ in movers}))
    patch: dict[str, dict[int, Tensor]] = {}
    for l, h in movers:  # the mover's output of the clean run, with its mean over the corrupted prompts at the last token
        value = runs.clean[result_hook(l)][:, :, h].clone()
        value[torch.arange(len(batch)), batch.last.to(value.device)] = at_last(runs.corrupted[result_hook(l)][:, :, h], batch.last).mean(0)
        patch.setdefault(result_hook(l), {})[h] = value
    names = [result_hook(l) for l in range(model_info(model).n_layers)]
    _, store = run_patches(model, batch, runs.clean_run, [{}, patch], names + ["ln_final.hook_scale"], memory_mb)
    with torch.no_grad():
        outputs = torch.stack([torch.stack([at_last(store[name][k], batch.last) for name in names], 1) for k in range(2)])
        scale = torch.stack([at_last(store["ln_final.hook_scale"][k], batch.last)[:, 0] for k in range(2)])
        clean_dla = project(model, batch, outputs[0], scale[0])
        ablated_dla = project(model, batch, outputs[1], scale[1])
    rise = (ablated_dla - clean_dla).cpu()
    lost = sum(rise[:, l, h] for l, h in movers) * -1
    return BackupResponse(movers, rise, lost, min_share)


# --------------------------------------------------------------------------- name movers' roles


ROLES = ("copies IO", "pushes S down", "neither pattern is established")


def mover_roles(attention: Float[Tensor, "prompt head target"], writes: Float[Tensor, "prompt head token"],
                n_resamples: int = 1000, seed: int = 0) -> list[str]:
    """What each head does at the last token, from :func:`attention_readout` and :func:`token_direct_effects`.

    ``"copies IO"``: it attends more to IO than to S and raises the IO logit; ``"pushes S
    down"``: it attends more to S and lowers the S logit; each with 95% intervals
    over prompts that exclude 0 (else ``"neither pattern is established"``).
    """
    roles = []
    for h in range(attention.shape[1]):
        looks = mean_interval(attention[:, h, 0] - attention[:, h, 1])
        io, s = (mean_interval(writes[:, h, k]) for k in (0, 1))
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
        """Every measurement as a mean over prompts with its 95% interval, named for a table."""
        mean = mean_interval
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


def copy_suppression(model, batch: Batch, sender: Head, receiver: Head, memory_mb: float | None = None) -> CopySuppression:
    """The measurements of :class:`CopySuppression` for one edge."""
    (sender,), (receiver,) = check_heads(model, [sender], "sender"), check_heads(model, [receiver], "receiver")
    if receiver[0] <= sender[0]:
        raise AttributionError(f"receiver L{receiver[0]}H{receiver[1]} is not after sender L{sender[0]}H{sender[1]}")
    if batch.task is not Task.IOI:
        raise AttributionError("copy_suppression reads IOI prompts (the indirect object is the copied token)")
    copied = batch.answers[:, 0]
    runs = clean_and_corrupted_runs(model, batch, frozen_names(model) + ["ln_final.hook_scale"])
    clean = runs.clean
    q_name, r_name, p_name = (f"blocks.{receiver[0]}.attn.hook_q", result_hook(receiver[0]),
                              f"blocks.{receiver[0]}.attn.hook_pattern")
    with torch.no_grad():
        output = at_last(clean[result_hook(sender[0])][:, :, sender[1]], batch.last)
        scale = at_last(clean["ln_final.hook_scale"], batch.last)[:, 0]
        sender_logit = torch.stack([project(model, batch, output, scale, batch.answers[:, k]) for k in (0, 1)], 1).cpu()
        _, direct = run_patches(model, batch, runs.base, [direct_patch(model, sender, clean, runs.corrupted)], [q_name], memory_mb)
        edge = {q_name: {receiver[1]: direct[q_name][0][:, :, receiver[1]]}}
        _, patched = run_patches(model, batch, runs.base, [{}, edge], [r_name, p_name, "ln_final.hook_scale"],
                                 memory_mb)  # the corrupted run; with the edge
        logits, attention = [], []
        for k in range(2):
            output = at_last(patched[r_name][k][:, :, receiver[1]], batch.last)
            logits.append(project(model, batch, output, at_last(patched["ln_final.hook_scale"][k], batch.last)[:, 0], copied))
            attention.append(readout(patched[p_name][k][:, receiver[1]:receiver[1] + 1], batch.corrupted, batch.last, copied[:, None])[:, 0, 0])
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
    delta = (direct_logit_attribution(model, batch, "clean").heads - direct_logit_attribution(model, batch, "corrupted").heads).mean(0)
    order = ranked_heads(delta)
    movers = order[:n_movers]
    negative = [h for h in order[::-1] if delta[h] < 0 and h not in movers][:n_negative]
    backup = [h for h in backup_response(model, batch, movers, min_share).heads() if h not in negative][:n_backup]
    return {"name movers": movers, "negative name movers": negative, "backup name movers": backup}


def ranked_senders(paths: Patched, senders: Sequence[Head], input: int = 0, receiver: int = 0) -> list[Head]:
    """``senders`` ordered by their share in ``paths`` (from :func:`ig_ap.heads.path_patching`) for one input and
    receiver column, largest first."""
    share = paths.share()[input, :, receiver]
    return [senders[i] for i in share.argsort(descending=True).tolist()]


def top_senders(paths: Patched, senders: Sequence[Head], k: int, input: int = 0, receiver: int = 0,
                min_share: float = 0.02) -> list[Head]:
    """At most ``k`` senders with the largest share in ``paths`` (from :func:`ig_ap.heads.path_patching`) for one input
    and receiver column, among those whose share is at least ``min_share`` of the gap and whose 95% interval
    lies above 0 (with fewer than 3 prompts there is no interval, and the share alone decides)."""
    share = paths.share()[input, :, receiver]
    out = []
    for sender in ranked_senders(paths, senders, input, receiver):
        i = senders.index(sender)
        if len(out) == k or share[i] < min_share:
            break
        low = paths.interval(input, i, receiver).low
        if math.isnan(low) or low > 0:
            out.append(sender)
    return out


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


def strongest_edge(paths: Patched) -> tuple[int, int, int]:
    """The (input, sender, receiver) index of the edge of ``paths`` (from :func:`ig_ap.heads.path_patching`) with the
    largest |share| of the gap."""
    share = paths.share()
    return tuple(int(x) for x in torch.unravel_index(share.abs().argmax(), share.shape))


def negative_edges(paths: Patched, senders: Sequence[Head], receivers: Sequence[Head], input: int = 0) -> list[tuple[Head, Head]]:
    """The sender → receiver edges of ``paths`` (from :func:`ig_ap.heads.path_patching`, one column per receiver) whose
    share through ``input`` is negative, most negative first."""
    share = paths.share()[input].flatten()
    return [(senders[int(k) // len(receivers)], receivers[int(k) % len(receivers)]) for k in share.argsort() if share[k] < 0]

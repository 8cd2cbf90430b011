"""The attribution kernels against the reference implementations, side by side in one run.

On the embedded model (or ``--model``), one IOI batch, CPU by default:

(a) activation patching of all heads vs TransformerLens ``get_act_patch_attn_head_out_all_pos``;
(b) activation patching of the neurons of a few layers vs a one-neuron-per-pass loop,
    timed on a sample of neurons and extrapolated;
(c) integrated gradients per layer and component kind vs Captum
    ``LayerIntegratedGradients`` with ``internal_batch_size`` = the batch size (as the
    original notebooks did), on a few layers;
(d) attribution patching (one forward and backward pass);
(e) IG along the whole network (``path="network"``: the conductance of every head and
    neuron of every layer, one batched pass over the path's points) vs Captum
    ``LayerConductance`` (one path per layer and kind), on a few layers, extrapolated;
(f) per-layer IG of every layer, the same steps: what (e) replaces when every layer is wanted;
(g) AtP* of every head (QK fix and GradDrop; and the QK fix alone) vs TransformerLens's loop of
    exact one-head patches (the AP it estimates), with each estimate's mean error against that AP.

For each it prints the time, the ratio reference / ours, the floating-point work ours
cannot avoid (the layers from the patched one up, the positions from the first one where
clean and corrupted differ; ×2 for a forward and backward pass with frozen weights), the achieved
GFLOP/s against the machine's measured matmul rate, and how close ours is to that floor.
It also checks on the way that ours and the reference agree.

    .venv/bin/python benchmarks/kernels.py                  # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/kernels.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import replace

import torch

from ig_ap.atp import atp_star, attribution_patching
from ig_ap.ig import integrated_gradients
from ig_ap.models import load_model, model_info
from ig_ap.patching import activation_patching
from ig_ap.tasks import make_dataset


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device, repeats: int = 5) -> float:
    """Best GFLOP/s of float32 matrix products of the shapes the kernels use."""
    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (4096, 576, 1536), (4096, 1536, 576)):
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        a @ b
        sync(device)
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return best


def layer_flops(info, rows: int, positions: int, context: int) -> float:
    """Forward FLOPs of one block for ``rows`` sequences of ``positions`` new tokens attending to ``context``."""
    d, h, kv, dh, f = info.d_model, info.n_heads, info.n_kv_heads, info.d_head, info.d_mlp
    gated = 3 if info.n_kv_heads != info.n_heads or "llama" in info.model_id or "smollm" in info.model_id else 2
    weights = d * h * dh * 2 + d * kv * dh * 2 + gated * d * f
    return 2 * rows * positions * (weights + 2 * h * dh * context)


def floor_flops(info, rows: int, positions: int, context: int, from_layer: int, backward: bool) -> float:
    """FLOPs of running layers ``from_layer`` … end plus the unembedding at the last token.

    A backward pass with frozen weights computes only the gradients of the activations,
    about as much work as the forward pass: ×2 in all.
    """
    work = (info.n_layers - from_layer) * layer_flops(info, rows, positions, context) + 2 * rows * info.d_model * info.d_vocab
    return 2 * work if backward else work


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--layers", type=int, nargs="*", default=None, help="layers for (b) and (c); default first, middle, last")
    parser.add_argument("--neuron-sample", type=int, default=12)
    parser.add_argument("--only", default="abcdefg", help="the comparisons to run, by letter (default all: abcdefg)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = load_model(args.model, device=args.device)
    for p in model.parameters():
        p.requires_grad_(False)
    info = model_info(model)
    batch = make_dataset("ioi", model, n=args.prompts, seed=0).batch().to(args.device)
    P, T = batch.clean.shape
    prefix = batch.first_difference()
    S = T - prefix
    layers = args.layers if args.layers is not None else [0, info.n_layers // 2, info.n_layers - 1]
    peak = matmul_rate(args.device)
    print(f"model {info.model_id} on {args.device}, torch threads {torch.get_num_threads()}; IOI batch of {P} prompts, "
          f"{T} positions, first difference at {prefix}; measured matmul rate {peak:.0f} GFLOP/s\n")
    rows = []

    def report(what, ours_s, ref_s, flops, ref_note=""):
        floor_s = flops / (peak * 1e9)
        rows.append((what, ref_s, ours_s, ref_s / ours_s if ref_s else float("nan"), flops / ours_s / 1e9, ours_s / floor_s, ref_note))

    base, source = batch.corrupted, batch.clean
    _, cache = model.run_with_cache(source)

    # (a) heads: TransformerLens, every head of every layer, one pass each.
    if "a" in args.only:
        from transformer_lens import patching as tl_patching

        with torch.no_grad():
            base_metric = batch.score(model(base, return_type="logits"))
        ref, ref_s = timed(lambda: tl_patching.get_act_patch_attn_head_out_all_pos(
            model, base, cache, lambda logits: (batch.score(logits) - base_metric).mean()), args.device)
        ours, ours_s = timed(lambda: activation_patching(model, batch, components="heads", progress=False), args.device)
        assert torch.allclose(ours.heads.mean(0).to(ref.device), ref, atol=1e-4), "AP heads differ from TransformerLens"
        flops = sum(floor_flops(info, P * info.n_heads, S, T, l, False) for l in range(info.n_layers))
        report(f"(a) AP, all {info.n_layers * info.n_heads} heads", ours_s, ref_s, flops)

    # (b) neurons: one neuron per pass on a sample, extrapolated to the layers' neurons.
    if "b" in args.only:
        ref_total = ours_total = flops = 0.0
        with torch.no_grad():
            for layer in layers:
                name = f"blocks.{layer}.mlp.hook_post"
                sample = torch.randperm(info.d_mlp, generator=torch.Generator().manual_seed(layer))[: args.neuron_sample]
                t = time.perf_counter()
                for n in sample.tolist():
                    def patch(act, hook, n=n):
                        act = act.clone()
                        act[:, :, n] = cache[name][:, :, n]
                        return act
                    model.run_with_hooks(base, fwd_hooks=[(name, patch)], return_type="logits")
                sync(args.device)
                ref_total += (time.perf_counter() - t) / len(sample) * info.d_mlp
                result, s = timed(lambda: activation_patching(model, batch, components="neurons", layers=[layer], progress=False), args.device)
                ours_total += s
                flops += info.d_mlp * floor_flops(info, P, S, T, layer, False)
        report(f"(b) AP, all neurons of layers {layers}", ours_total, ref_total, flops, "loop extrapolated")

    # (c) IG per layer and kind vs Captum LayerIntegratedGradients (internal_batch_size = batch size).
    if "c" in args.only:
        from captum.attr import LayerIntegratedGradients

        def forward(tokens, answers, last):
            return replace(batch, answers=answers, last=last).score(model(tokens, return_type="logits"))

        ref_total = ours_total = flops = 0.0
        worst = 0.0
        for layer in layers:
            for kind, module in (("heads", model.blocks[layer].attn.hook_z), ("neurons", model.blocks[layer].mlp.hook_post)):
                lig = LayerIntegratedGradients(forward, module)
                raw, s = timed(lambda: lig.attribute(batch.clean, baselines=batch.corrupted, additional_forward_args=(batch.answers, batch.last),
                                                     n_steps=args.steps, method="gausslegendre", internal_batch_size=P), args.device)
                ref_total += s
                result, s = timed(lambda: integrated_gradients(model, batch, components=kind, layers=[layer], n_steps=args.steps, progress=False), args.device)
                ours_total += s
                expected = raw.reshape(P, T, info.n_heads, -1).sum(dim=(1, 3)) if kind == "heads" else raw.sum(dim=1)
                got = result[kind][:, layer].to(expected.device)
                worst = max(worst, float((got - expected).abs().max() / expected.abs().max()))
                flops += floor_flops(info, P * args.steps, S, T, layer, True)
        assert worst < 1e-4, f"IG differs from Captum (relative {worst:.1e})"
        report(f"(c) IG, {args.steps} steps, heads and neurons of layers {layers}", ours_total, ref_total, flops, f"max rel diff {worst:.1e}")

    # (d) attribution patching: everything in one forward and backward pass.
    if "d" in args.only:
        _, s = timed(lambda: attribution_patching(model, batch), args.device)
        report("(d) AtP, all heads and neurons", s, 0.0, floor_flops(info, P, T, T, 0, True) + floor_flops(info, P, T, T, 0, False))

    # (e) IG along the whole network vs Captum LayerConductance, one path per layer and kind (Captum's rule is our
    if "e" in args.only:
        # "riemann_left" on n_steps + 1 points; Captum names it riemann_trapezoid).
        from captum.attr import LayerConductance

        name = "blocks.0.hook_resid_pre"
        embeds = {k: model.run_with_cache(tokens, names_filter=name)[1][name] for k, tokens in (("clean", batch.clean), ("corrupted", batch.corrupted))}

        def forward_embeds(resid, tokens, answers, last):
            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda act, hook: resid)], return_type="logits")
            return replace(batch, answers=answers, last=last).score(logits)

        network, ours_s = timed(lambda: integrated_gradients(model, batch, path="network", n_steps=args.steps, method="riemann_left",
                                                             progress=False), args.device)
        ref_total, worst = 0.0, 0.0
        for layer in layers:
            for kind, module in (("heads", model.blocks[layer].attn.hook_z), ("neurons", model.blocks[layer].mlp.hook_post)):
                conductance = LayerConductance(forward_embeds, module)
                raw, s = timed(lambda: conductance.attribute(embeds["clean"], baselines=embeds["corrupted"], n_steps=args.steps,
                                                             additional_forward_args=(batch.clean, batch.answers, batch.last),
                                                             method="riemann_trapezoid", internal_batch_size=2 * P).detach(), args.device)
                ref_total += s
                expected = raw.reshape(P, T, info.n_heads, -1).sum(dim=(1, 3)) if kind == "heads" else raw.sum(dim=1)
                got = network[kind][:, layer].to(expected.device)
                worst = max(worst, float((got - expected).abs().max() / expected.abs().max()))
        assert worst < 1e-4, f"network IG differs from Captum's LayerConductance (relative {worst:.1e})"
        network_flops = floor_flops(info, P * (args.steps + 1), S, T, 0, True)
        report(f"(e) IG along the network, {args.steps} steps, every head and neuron of every layer", ours_s,
               ref_total / len(layers) * info.n_layers, network_flops, f"Captum per layer and kind, extrapolated; max rel diff {worst:.1e}")

    # (f) per-layer IG of every layer, the same steps: one pass over the path per layer and kind.
    if "f" in args.only:
        _, s = timed(lambda: integrated_gradients(model, batch, n_steps=args.steps, progress=False), args.device)
        report(f"(f) per-layer IG, {args.steps} steps, every layer (what (e) replaces)", s, 0.0,
               sum(floor_flops(info, P * args.steps, S, T, l, True) for l in range(info.n_layers)), f"(f) / (e) time: {s / ours_s:.1f}×")

    # (g) AtP* of every head vs exact one-head patches (TransformerLens), and how far each estimate is from them.
    if "g" in args.only:
        from transformer_lens import patching as tl_patching

        with torch.no_grad():
            base_metric = batch.score(model(base, return_type="logits"))
        per_prompt = []

        def exact_heads():  # one head patched per pass, each prompt's effect kept
            for p in range(P):
                one = replace(batch, clean=batch.clean[p:p + 1], corrupted=batch.corrupted[p:p + 1], answers=batch.answers[p:p + 1],
                              last=batch.last[p:p + 1])
                _, one_cache = model.run_with_cache(one.clean)
                per_prompt.append(tl_patching.get_act_patch_attn_head_out_all_pos(
                    model, one.corrupted, one_cache, lambda logits, one=one, p=p: (one.score(logits) - base_metric[p]).mean()))
            return torch.stack(per_prompt)

        ap, ref_s = timed(exact_heads, args.device)
        atp = attribution_patching(model, batch, components="heads", progress=False).heads
        qk, qk_s = timed(lambda: atp_star(model, batch, components="heads", grad_drop=False, progress=False), args.device)
        star, star_s = timed(lambda: atp_star(model, batch, components="heads", progress=False), args.device)
        ap = ap.to(atp.device)
        errors = {"AtP": (atp - ap).abs().mean(), "QK fix": (qk.heads - ap).abs().mean()}
        magnitude = {"|AtP|": (atp.abs() - ap.abs()).abs().mean(), "AtP*": (star.heads - ap.abs()).abs().mean()}
        note = (f"mean abs(estimate − AP) over heads and prompts: AtP {errors['AtP']:.4f}, QK fix {errors['QK fix']:.4f}; "
                f"of magnitudes, abs(abs(AtP) − abs(AP)) {magnitude['|AtP|']:.4f}, abs(AtP* − abs(AP)) {magnitude['AtP*']:.4f}")
        one_pass = floor_flops(info, P, S, T, 0, True) + floor_flops(info, P, S, T, 0, False)
        report("(g) AtP*, QK fix alone, all heads", qk_s, ref_s, one_pass, "exact one-head patches (TransformerLens), per prompt")
        report("(g) AtP*, QK fix and GradDrop, all heads", star_s, ref_s, (1 + info.n_layers) * one_pass, note)

    print("| kernel | reference | ours | speed-up | ours GFLOP/s | ours / floor | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for what, ref_s, ours_s, ratio, rate, to_floor, note in rows:
        ref_text = f"{ref_s:.1f} s" if ref_s else "-"
        ratio_text = f"{ratio:.1f}×" if ref_s else "-"
        print(f"| {what} | {ref_text} | {ours_s:.1f} s | {ratio_text} | {rate:.0f} | {to_floor:.1f}× | {note} |")
    peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_mem:.0f} MiB" + (f", peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if args.device.startswith("cuda") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

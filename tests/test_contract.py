"""One kernel contract: every kernel takes the same options, `results.compute` passes every one
through, nothing not computed reads as 0, metrics read last-token logits, and the tokenizer,
`to_tokens`, `to_single_token` and `model_info` agree on the BOS token."""

import ast
import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ig_ap.ioi
from ig_ap import book, plots, storage, tasks, words
from ig_ap.analysis import per_prompt_correlation, top_components
from ig_ap.attribution import AttributionError
from ig_ap.models import EMBEDDED, TINY_MODELS, load_model, model_info, tokenize
from ig_ap.replay import rows_per_pass
from ig_ap.results import KERNELS, compute, result_name

# A valid value, other than the default, for every option a kernel accepts besides model,
# batch, metric and direction. A kernel that gains an option fails the test below until the
# option is added here, so `results.compute` is checked with it.
OPTION_VALUES = {
    "components": ("neurons",),
    "neurons": {0: [1, 2]},
    "layers": [1],
    "internal_batch_size": 3,
    "memory_mb": 64,
    "share_prefix": False,
    "device": "cpu",
    "progress": False,
    "meta": {"note": "checked"},
    "n_steps": 3,
    "method": "riemann_left",
    "path": "network",
    "baseline": "zero",
    "context": "baseline",
    "segments": 2,
    "tolerance": 0.5,
    "max_steps": 8,
    "qk_fix": False,
    "grad_drop": False,
    "only": {"heads": {0: [1, 2]}},
}
NOT_OPTIONS = {"model", "batch", "metric", "direction"}


def _options(kernel):
    return [p for p in inspect.signature(kernel).parameters if p not in NOT_OPTIONS]


@pytest.fixture(scope="module")
def ioi(tiny_gpt2):
    return tasks.make_dataset("ioi", tiny_gpt2, n=3, seed=0)


def test_every_kernel_takes_the_shared_options():
    shared = {"layers", "internal_batch_size", "memory_mb", "share_prefix", "device", "progress", "meta", "components"}
    for name, kernel in KERNELS.items():
        assert shared <= set(_options(kernel)), f"{name} lacks {shared - set(_options(kernel))}"


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compute_passes_every_kernel_option_through(tmp_path, tiny_gpt2, ioi, name):
    kernel = KERNELS[name]
    unknown = set(_options(kernel)) - set(OPTION_VALUES)
    assert not unknown, f"add a test value for {name}'s new option(s) {unknown}"
    for option in _options(kernel):
        value = OPTION_VALUES[option]
        extra = {} if option == "progress" else {"progress": False}
        if option != "components":  # kept small: heads, or the neuron subset being tested
            extra["components"] = ("neurons",) if option == "neurons" else ("heads",)
        if name == "ig" and option != "n_steps":
            extra["n_steps"] = 2
        ours = compute(tiny_gpt2, ioi, name, "noising", directory=tmp_path, **{option: value}, **extra)
        direct = kernel(tiny_gpt2, ioi.batch(), direction="noising", **{option: value}, **extra)
        for kind in ("heads", "neurons"):
            if getattr(direct, kind) is not None:
                torch.testing.assert_close(ours[kind], direct[kind], equal_nan=True, msg=f"{name}, {option}")


def test_ig_quadrature_method_is_a_kernel_option_not_the_kernel(tmp_path, tiny_gpt2, ioi):
    """Defect 1: compute's own parameter named `method` swallowed IG's quadrature rule."""
    left = compute(tiny_gpt2, ioi, "ig", directory=tmp_path, method="riemann_left", n_steps=2, progress=False)
    gauss = compute(tiny_gpt2, ioi, "ig", directory=tmp_path, n_steps=2, progress=False)
    assert left.meta["method"] == "riemann_left" and gauss.meta["method"] == "gausslegendre"
    assert not torch.allclose(left.heads, gauss.heads)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_compute_refuses_a_metric_it_cannot_key(tmp_path, tiny_gpt2, ioi):
    with pytest.raises(ValueError, match="call the kernel directly"):
        compute(tiny_gpt2, ioi, "ap", directory=tmp_path, metric=lambda final, batch: final[..., 0])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_atp_and_every_kernel_take_progress_layers_and_chunks(tiny_llama, name):
    """Defect 2 (AtP took none of these) and defect 3 (left-out layers read as 0)."""
    batch = tasks.make_dataset("ioi", tiny_llama, n=5, seed=1).batch()
    kernel = KERNELS[name]
    extra = {"n_steps": 3} if name == "ig" else {"neurons": {l: list(range(0, 128, 9)) for l in range(3)}} if name == "ap" else {}
    full = kernel(tiny_llama, batch, progress=False, **extra)
    some = kernel(tiny_llama, batch, progress=False, layers=[1], internal_batch_size=2, share_prefix=False, memory_mb=16,
                  device="cpu", meta={"run": 1}, **extra)
    assert some.meta["run"] == 1 and some.meta["rows_per_pass"] == (2 if name.startswith("atp") else 5)  # AtP, AtP*: prompts
    for kind in ("heads", "neurons"):
        left_out = some[kind][:, [0, 2]]
        assert left_out.isnan().all(), f"{name} {kind}: a layer not computed must be NaN, not 0"
        torch.testing.assert_close(some[kind][:, 1], full[kind][:, 1], rtol=1e-4, atol=1e-5, equal_nan=True)
        assert some[kind][:, 1].isfinite().any()
        # NaN drops out of the statistics: the correlation is the one on the computed layer alone
        torch.testing.assert_close(per_prompt_correlation(some[kind], full[kind]),
                                   per_prompt_correlation(some[kind][:, 1:2], full[kind][:, 1:2]))
        assert not top_components(some[kind], k=3)[[0, 2]].any()


def test_ap_of_a_neuron_subset_and_left_out_heads_are_nan_alike(tiny_gpt2, ioi):
    from ig_ap.patching import activation_patching

    ap = activation_patching(tiny_gpt2, ioi.batch(), layers=[0], neurons={0: [3]}, progress=False)
    assert ap.heads[:, 1].isnan().all() and not ap.heads[:, 0].isnan().any()
    assert ap.neurons[:, 0, 3].isfinite().all() and ap.neurons.isnan().sum() == ap.neurons.numel() - len(ioi)


def test_bad_shared_options_fail_in_one_line(tiny_gpt2, ioi):
    for name, kernel in KERNELS.items():
        with pytest.raises(AttributionError, match="internal_batch_size must be a positive int"):
            kernel(tiny_gpt2, ioi.batch(), internal_batch_size=0)
        with pytest.raises(AttributionError, match="memory_mb must be a positive number"):
            kernel(tiny_gpt2, ioi.batch(), memory_mb="lots")
        with pytest.raises(AttributionError, match="are not layers of this model"):
            kernel(tiny_gpt2, ioi.batch(), layers=[7])


# ---- metrics read last-token logits


def test_metrics_broadcast_over_copies_of_a_batch(tiny_llama):
    for task in tasks.Task:
        data = tasks.make_dataset(task, tiny_llama, n=4, seed=0)
        batch = data.batch()
        final = torch.randn(3, len(batch), tiny_llama.cfg.d_vocab)
        widened = batch.metric(final, batch)
        assert widened.shape == (3, len(batch))
        for c in range(3):
            torch.testing.assert_close(widened[c], batch.metric(final[c], batch))


# ---- the BOS convention (defect 6)


@pytest.mark.parametrize("name", (EMBEDDED, *TINY_MODELS))
def test_tokenizer_to_tokens_single_token_and_info_agree_on_bos(name, request):
    model = request.getfixturevalue({"smollm2-135m": "smollm2", "tiny-gpt2": "tiny_gpt2", "tiny-llama": "tiny_llama"}[name])
    info = model_info(model)
    own = model.tokenizer(" Mary")["input_ids"]
    assert own == [5099], f"the tokenizer adds {own[:-1]} before ' Mary'"
    assert model.to_single_token(" Mary") == own[0]
    bos = [model.tokenizer.bos_token_id] if info.prepend_bos else []
    assert model.to_tokens(" Mary")[0].tolist() == bos + own == tokenize(model, " Mary")
    assert model.cfg.default_prepend_bos is info.prepend_bos


def test_a_freshly_built_embedded_tokenizer_adds_no_bos(tmp_path, monkeypatch):
    """The first load (tokenizer read from the GGUF) and later ones (from the cache) agree."""
    monkeypatch.setenv("IG_AP_CACHE", str(tmp_path))
    first = load_model("tiny-llama")  # builds the tokenizer folder from the GGUF
    again = load_model("tiny-llama")
    assert first.tokenizer(" Mary")["input_ids"] == again.tokenizer(" Mary")["input_ids"] == [5099]


# ---- the book runner (defects 4 and 5)


def test_the_book_builds_where_it_is_told(tmp_path):
    assert book._jupyter_book_output(tmp_path / "_build") == tmp_path
    assert book._jupyter_book_output(tmp_path / "site") == tmp_path / "site" / ".jupyter-book"


def test_one_name_per_meaning_and_the_gpu_profile_fills_a_pass():
    from ig_ap import sweep
    from ig_ap.attribution import SPEED_OPTIONS

    assert set(sweep.SET_BY_SWEEP) <= set(SPEED_OPTIONS)  # one list of speed-only options
    for notebook in book.chapters():
        assert "batch_size" not in book.chapter_parameters(notebook), f"{notebook.stem}: rows per pass is internal_batch_size"
    gpu = book.PROFILES["gpu"]
    assert gpu.get("internal_batch_size") is None  # sized from memory_mb, not one component per pass
    gpt2_small = SimpleNamespace(cfg=SimpleNamespace(d_model=768, d_mlp=3072, n_heads=12, d_head=64, d_vocab=50257))
    prompts, positions = gpu["n_prompts"], 16
    for layer in range(12):
        ap_rows = rows_per_pass(gpt2_small, positions, 12 - layer, False, gpu["memory_mb"])
        ig_rows = rows_per_pass(gpt2_small, positions, 12 - layer, True, gpu["memory_mb"])
        assert ap_rows >= 12 * prompts, f"layer {layer}: AP patches fewer than all 12 heads per pass"
        assert ig_rows >= 25 * prompts, f"layer {layer}: IG runs fewer than 25 steps per pass"
    cpu = rows_per_pass(gpt2_small, positions, 12, True, 1024)
    assert cpu < 2 * prompts  # the CPU budget would have run one step per pass


# ---- smaller defects (7)


def test_word_lists_hold_no_repeats():
    for name in ("NAMES", "PLACES", "OBJECTS", "GREATER_THAN_NOUNS", "FEMALE_PROFESSIONS", "MALE_PROFESSIONS"):
        values = getattr(words, name)
        assert len(values) == len(set(values)), f"{name} repeats {[v for v in values if values.count(v) > 1]}"


def test_backup_name_movers_are_found_by_response_and_stay_apart_from_the_other_sets(tiny_gpt2, monkeypatch):
    """Backup heads come from the response to the name movers' ablation (not DLA ranks), never a negative name mover."""
    delta = torch.tensor([5.0, 4.0, 3.0, 2.0, -0.1, -0.2, -3.0, -4.0]).view(2, 4)
    fake = {"clean": SimpleNamespace(heads=delta[None]), "corrupted": SimpleNamespace(heads=torch.zeros(1, 2, 4))}
    monkeypatch.setattr(ig_ap.ioi, "direct_logit_attribution", lambda model, batch, run: fake[run])
    asked = []
    response = SimpleNamespace(heads=lambda: [(1, 3), (1, 0), (0, 2)])
    monkeypatch.setattr(ig_ap.ioi, "backup_response", lambda model, batch, movers, min_share: asked.append(movers) or response)
    sets = ig_ap.ioi.find_head_sets(tiny_gpt2, None, n_movers=1, n_negative=2, n_backup=5)
    assert asked == [[(0, 0)]]  # the response to the name movers' ablation
    assert sets["name movers"] == [(0, 0)]
    assert sets["negative name movers"] == [(1, 3), (1, 2)]
    assert sets["backup name movers"] == [(1, 0), (0, 2)]


def test_a_cache_hit_reads_and_hashes_the_result_once(tmp_path, tiny_gpt2, ioi, monkeypatch):
    import ig_ap.results as results

    compute(tiny_gpt2, ioi, "atp", directory=tmp_path, progress=False)
    calls = []
    real = results.file_sha256
    monkeypatch.setattr(results, "file_sha256", lambda path: calls.append(path) or real(path))
    compute(tiny_gpt2, ioi, "atp", directory=tmp_path, progress=False)
    assert len(calls) == 1


def test_storage_writes_all_files_or_none(tmp_path):
    targets = [tmp_path / "a.bin", tmp_path / "b.json"]

    def fail(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        storage.write_files_atomically(targets, [lambda p: p.write_text("a"), fail])
    assert not list(tmp_path.iterdir())
    storage.write_files_atomically(targets, [lambda p: p.write_text("a"), lambda p: p.write_text(json.dumps(1))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]


def test_result_names_say_which_kernel(tiny_gpt2, ioi):
    from ig_ap.results import _dataset_key

    key = _dataset_key(tiny_gpt2, ioi, kernel="ig", direction="noising", method="riemann_left")
    assert result_name(key).startswith("tiny-gpt2-s0-ioi-ig-noising-")


# ---- no hidden state, one batching rule

PACKAGE = Path(ig_ap.ioi.__file__).parent


def _module_level_containers(tree: ast.Module):
    """(name, line) of every module-level assignment of a mutable container (dict, list, set, or a call making one)."""
    makers = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        mutable = isinstance(value, makers) or (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                                                 and value.func.id in ("dict", "list", "set", "defaultdict", "OrderedDict"))
        for target in targets:
            if mutable and isinstance(target, ast.Name) and not target.id.startswith("__"):
                yield target.id, node.lineno


def test_no_module_keeps_module_level_mutable_state():
    """No `global` statement, and every module-level container is a CONSTANT by name (checked below to stay unchanged)."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{path.name} rebinds a module-level name"
        state = [f"{name} (line {line})" for name, line in _module_level_containers(tree) if name.lstrip("_") != name.lstrip("_").upper()]
        assert not state, f"{path.name} keeps module-level state: {', '.join(state)}"


def test_module_level_constants_stay_unchanged_while_a_chapter_runs(tmp_path, tiny_gpt2, monkeypatch):
    """Open a chapter, compute and cache through it, show a figure: every module's CONSTANT containers are as before."""
    import importlib
    import pickle

    import plotly.graph_objects as go

    modules = [importlib.import_module(f"ig_ap.{p.stem}") for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"]

    def constants():  # compared as their pickled bytes (they hold tensors and functions)
        return {(m.__name__, k): pickle.dumps(v) for m in modules for k, v in vars(m).items()
                if k.lstrip("_").isupper() and isinstance(v, (dict, list, set))}

    before = constants()
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    chapter = book.Chapter(tiny_gpt2, model_info(tiny_gpt2), {"ig_steps": 2, "memory_mb": 64}, results=tmp_path / "r",
                           cache=tmp_path / "c", log=tmp_path / "used.results", page=plots.Page(tmp_path / "data"))
    data = tasks.make_dataset("ioi", tiny_gpt2, n=2, seed=0)
    chapter.compute(data, "ig", components=("heads",), **chapter.quadrature)
    chapter.cached(ig_ap.heads.set_effects, data, heads=[(0, 1), (1, 2)])
    chapter.show(go.Figure(go.Bar(x=["a"], y=[1.0])), "fig-a", "caption")
    assert constants() == before
    assert (tmp_path / "used.results").read_text().count("\n") == 1 and (tmp_path / "data" / "fig-a.csv").is_file()


def _rows_per_pass(model, call) -> int:
    """The most rows any forward pass through the model's last block held while ``call()`` ran."""
    rows = []
    handle = model.blocks[-1].register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    try:
        call()
    finally:
        handle.remove()
    return max(rows)


def test_every_pass_of_patched_copies_respects_memory_mb(tiny_gpt2):
    """With a budget too small for two copies of the batch, no pass of any kernel or patching function holds more
    than one copy (the prompts); with the default budget the same calls do batch several copies per pass."""
    import ig_ap.ablation as ablation
    from ig_ap import atp, ig, patching

    model, H = tiny_gpt2, ig_ap.heads
    batch = tasks.make_dataset("ioi", model, n=3, seed=0).batch()
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 2] = True
    calls = {
        "AP": lambda m: patching.activation_patching(model, batch, components="heads", memory_mb=m, progress=False),
        "IG": lambda m: ig.integrated_gradients(model, batch, components="heads", n_steps=4, memory_mb=m, progress=False),
        "AtP": lambda m: atp.attribution_patching(model, batch, memory_mb=m, progress=False),
        "patch_sets": lambda m: ablation.faithfulness(model, batch, [{"heads": mask}, {"heads": ~mask}], memory_mb=m),
        "interaction": lambda m: ablation.interaction(model, batch, mask, "heads", "denoising", memory_mb=m),
        "set_effects": lambda m: H.set_effects(model, batch, [(0, 1), (1, 2)], memory_mb=m),
        "patch_heads": lambda m: H.patch_heads(model, batch, [(0, 1)], memory_mb=m),
        "patched_direct_effects": lambda m: H.patched_direct_effects(model, batch, [(0, 1)], memory_mb=m),
        "path_patching": lambda m: H.path_patching(model, batch, [(0, 0), (0, 1)], [(1, 2)], memory_mb=m),
        "mlp_paths": lambda m: H.mlp_paths(model, batch, (0, 1), memory_mb=m),
        "backup_response": lambda m: ig_ap.ioi.backup_response(model, batch, [(1, 0)], memory_mb=m),
        "copy_suppression": lambda m: ig_ap.ioi.copy_suppression(model, batch, (0, 1), (1, 2), memory_mb=m),
    }
    for name, call in calls.items():
        assert _rows_per_pass(model, lambda: call(1e-6)) <= len(batch), name
        if name not in ("AtP", "patch_heads", "patched_direct_effects"):  # passes of prompts, or of one patch, either way
            assert _rows_per_pass(model, lambda: call(None)) > len(batch), f"{name} never batches copies"


def test_every_module_is_on_a_floor_of_the_package_docstring_and_imports_nothing_above_it():
    import re

    floors, floor = {}, None
    for line in ig_ap.__doc__.splitlines():
        match = re.match(r"(\d)\. ", line)
        floor = int(match.group(1)) if match else floor
        for name in re.findall(r":mod:`ig_ap\.(\w+)`", line):
            if floor is not None:
                floors.setdefault(name, floor)
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert set(floors) == modules, f"modules not on a floor: {modules - set(floors)}; not modules: {set(floors) - modules}"
    for name in sorted(modules):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        used = {n.module.split(".")[1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ig_ap.")}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "ig_ap" for a in n.names}
        above = sorted(m for m in used & modules if floors[m] > floors[name])
        assert not above, f"{name} (floor {floors[name]}) imports {above} from above"

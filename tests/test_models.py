"""The model loader: bridges equal plain transformers, hooks exist, the cache behaves, errors are clear."""

import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from ig_ap import models, storage
from ig_ap.models import (
    ModelUnavailableError,
    UnknownModelError,
    load_model,
    model_info,
    tokenize,
)

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The war lasted from the year 1732 to the year 17",
]


def _padded(model, prompts):
    rows = [tokenize(model, p) for p in prompts]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, [len(r) for r in rows]


def _compare_with_hf(bridge, hf_model):
    ids, lengths = _padded(bridge, PROMPTS)
    with torch.no_grad():
        ours = bridge(ids, return_type="logits")
        theirs = hf_model(ids).logits
    for i, n in enumerate(lengths):  # causal: positions before n do not see padding
        torch.testing.assert_close(ours[i, :n], theirs[i, :n], rtol=1e-4, atol=1e-4)
    # And the model is not a constant function: the logits differ between prompts.
    assert (ours[0, lengths[0] - 1] - ours[1, lengths[1] - 1]).abs().max() > 1e-3


@pytest.mark.parametrize("name", models.TINY_MODELS)
def test_tiny_bridge_equals_transformers(name):
    bridge = load_model(name, device="cpu", seed=3)
    hf_model, _ = models._build_tiny_hf(name, 3)
    _compare_with_hf(bridge, hf_model)


def test_embedded_bridge_equals_transformers(smollm2):
    hf_model = AutoModelForCausalLM.from_pretrained(
        models.embedded_weights_dir(), dtype=torch.float32, attn_implementation="eager"
    )
    _compare_with_hf(smollm2, hf_model)


def test_embedded_model_facts(smollm2):
    info = model_info(smollm2)
    assert (info.n_layers, info.n_heads, info.n_kv_heads) == (30, 9, 3)
    assert (info.d_model, info.d_mlp, info.d_vocab) == (576, 1536, 49152)
    assert info.prepend_bos is False
    assert info.model_id == "smollm2-135m"
    # Digits are one token each, and no BOS is prepended.
    ids = tokenize(smollm2, " 1732")
    assert len(ids) == 5 and ids[0] != info.tokenizer.bos_token_id
    # The trained model knows the IOI answer: " Mary" beats " John".
    ids = torch.tensor([tokenize(smollm2, PROMPTS[0])])
    with torch.no_grad():
        logits = smollm2(ids, return_type="logits")[0, -1]
    mary, john = tokenize(smollm2, " Mary")[0], tokenize(smollm2, " John")[0]
    assert logits[mary] > logits[john]


def test_tiny_models_are_seeded():
    a = load_model("tiny-llama", seed=1)
    b = load_model("tiny-llama", seed=1)
    c = load_model("tiny-llama", seed=2)
    ids = torch.tensor([tokenize(a, PROMPTS[0])])
    with torch.no_grad():
        la, lb, lc = (m(ids, return_type="logits") for m in (a, b, c))
    assert torch.equal(la, lb)
    assert not torch.allclose(la, lc)
    assert model_info(a).model_id == "tiny-llama-s1"


def test_hook_names_and_shapes(tiny_model):
    info = model_info(tiny_model)
    ids, _ = _padded(tiny_model, PROMPTS)
    batch, pos = ids.shape
    _, cache = tiny_model.run_with_cache(ids)
    for layer in range(info.n_layers):
        assert cache[f"blocks.{layer}.attn.hook_z"].shape == (batch, pos, info.n_heads, info.d_head)
        assert cache[f"blocks.{layer}.attn.hook_result"].shape == (batch, pos, info.n_heads, info.d_model)
        assert cache[f"blocks.{layer}.mlp.hook_post"].shape == (batch, pos, info.d_mlp)
        assert cache[f"blocks.{layer}.hook_mlp_in"].shape == (batch, pos, info.d_model)
        # hook_result is the per-head split of the attention output (bias excluded).
        attn_out = cache[f"blocks.{layer}.hook_attn_out"]
        heads = cache[f"blocks.{layer}.attn.hook_result"].sum(dim=2)
        bias = attn_out - heads
        torch.testing.assert_close(bias, bias[:1, :1].expand_as(bias), rtol=1e-4, atol=1e-5)


def test_embedded_hook_shapes(smollm2):
    ids = torch.tensor([tokenize(smollm2, PROMPTS[0])])
    _, cache = smollm2.run_with_cache(ids, names_filter=lambda n: n.startswith("blocks.29."))
    assert cache["blocks.29.attn.hook_z"].shape == (1, ids.shape[1], 9, 64)
    assert cache["blocks.29.attn.hook_result"].shape == (1, ids.shape[1], 9, 576)
    assert cache["blocks.29.mlp.hook_post"].shape == (1, ids.shape[1], 1536)


def test_embedded_cache_reused_then_rebuilt_when_truncated(tmp_path, monkeypatch):
    monkeypatch.setenv("IG_AP_CACHE", str(tmp_path))
    folder = models.embedded_weights_dir()  # cold: dequantizes the GGUF
    weights = folder / "model.safetensors"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert weights.stat().st_size == manifest["size"]
    assert not [p for p in tmp_path.rglob(".*") if p.is_dir()], "a staging folder was left behind"

    # Warm: the cache is read, nothing is dequantized.
    calls = []
    real = models._dequantize_embedded
    monkeypatch.setattr(models, "_dequantize_embedded", lambda *a: (calls.append(a), real(*a)))
    started = time.perf_counter()
    model = load_model("smollm2-135m", device="cpu")
    assert calls == [] and time.perf_counter() - started < 15
    assert model_info(model).n_layers == 30
    assert models.prepare_embedded() == folder and calls == []  # make setup's step: nothing to do on a valid cache

    # Truncated: detected by size and rebuilt.
    with open(weights, "r+b") as f:
        f.truncate(manifest["size"] // 2)
    assert models.embedded_weights_dir() == folder
    assert len(calls) == 1
    assert weights.stat().st_size == manifest["size"]

    # Same size, altered bytes: detected by the hash and rebuilt.
    with open(weights, "r+b") as f:
        f.seek(manifest["size"] // 3)
        f.write(b"\x00" * 64)
    models.embedded_weights_dir()
    assert len(calls) == 2
    assert storage.file_sha256(weights) == manifest["sha256"]


@pytest.mark.parametrize("name", ["no-such-model", "gpt-7", ""])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(UnknownModelError, match="smollm2-135m") as err:
        load_model(name)
    assert "\n" not in str(err.value)


def test_offline_hub_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty Hugging Face cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="offline, use the embedded model 'smollm2-135m'") as err:
        load_model("gpt2-small")
    assert time.perf_counter() - started < 5, "the offline error must come at once, without retries"
    assert "gpt2" in str(err.value) and "\n" not in str(err.value)


def test_hub_names_resolve_through_transformer_lens():
    assert models.resolve_hub_name("gpt2-small") == "gpt2"
    assert models.resolve_hub_name("gpt2") == "gpt2"


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error cannot happen here")
    with pytest.raises(ModelUnavailableError, match="device='cpu'"):
        load_model("tiny-gpt2", device="cuda")


# ---- your own checkpoint: a Hugging Face folder on disk


def _save_tiny(name: str, folder, seed: int = 0):
    """A tiny random model and the embedded tokenizer saved as a Hugging Face checkpoint folder."""
    hf_model, tokenizer = models._build_tiny_hf(name, seed)
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_a_checkpoint_folder_round_trips(tmp_path, name):
    """Saved to a folder and loaded by its path (offline), a model gives the in-memory model's AP and IG exactly."""
    from ig_ap.ig import integrated_gradients
    from ig_ap.patching import activation_patching
    from ig_ap.tasks import make_dataset

    folder = _save_tiny(name, tmp_path / "my-checkpoint")
    loaded = load_model(str(folder), device="cpu")
    in_memory = load_model(name, device="cpu")
    info = models.model_info(loaded)
    assert info.model_id.startswith("my-checkpoint-") and info.n_layers == in_memory.cfg.n_layers
    batch = make_dataset("ioi", in_memory, n=3, seed=0).batch()  # the same token ids for both
    for kernel in (lambda m: activation_patching(m, batch, components="heads", progress=False),
                   lambda m: integrated_gradients(m, batch, n_steps=4, progress=False)):
        ours, theirs = kernel(loaded), kernel(in_memory)
        for kind in ("heads", "neurons"):
            if getattr(ours, kind) is not None:
                torch.testing.assert_close(ours[kind], theirs[kind], rtol=1e-5, atol=1e-6)
    # the cache id follows the weights: another seed saved under the same name is another id
    other = _save_tiny(name, tmp_path / "elsewhere" / "my-checkpoint", seed=1)
    assert models.checkpoint_id(other) != models.checkpoint_id(folder)
    assert models.checkpoint_id(folder) == info.model_id


def test_a_bridge_loaded_by_the_user_works_everywhere(tmp_path):
    """A TransformerBridge booted by hand (not through load_model) is accepted by the kernels and the datasets."""
    from transformer_lens.model_bridge import TransformerBridge

    from ig_ap.atp import attribution_patching
    from ig_ap.tasks import make_dataset

    hf_model, tokenizer = models._build_tiny_hf("tiny-llama", 0)
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf_model, tokenizer=tokenizer, device="cpu")
    assert not hasattr(bridge, "ig_ap_info")
    batch = make_dataset("ioi", bridge, n=2, seed=0).batch()
    result = attribution_patching(bridge, batch, progress=False)
    assert result.heads.isfinite().all() and result.neurons.isfinite().all()


def test_a_bad_checkpoint_folder_is_one_clear_line(tmp_path):
    folder = _save_tiny("tiny-gpt2", tmp_path / "no-tokenizer")
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            f.unlink()
    with pytest.raises(ModelUnavailableError, match="has no tokenizer") as error:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_model(str(empty), device="cpu")
    # an architecture the bridge does not support: a config transformers knows, TransformerLens does not
    from transformers import XLNetConfig

    odd = tmp_path / "odd"
    AutoModelForCausalLM.from_config(XLNetConfig(d_model=16, n_layer=1, n_head=2, d_inner=32, vocab_size=100)).save_pretrained(odd)
    models.embedded_tokenizer().save_pretrained(odd)
    with pytest.raises(UnknownModelError, match="XLNetLMHeadModel") as error:
        load_model(str(odd), device="cpu")
    assert "\n" not in str(error.value)

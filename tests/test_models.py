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

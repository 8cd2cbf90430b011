"""The results cache: round trip, keys that must match, writes that cannot leave a loadable half."""

import json

import pytest
import torch

from ig_ap.attribution import Attribution
from ig_ap.results import ResultKeyError, cached, load, result_key, result_name, save


def _result(seed=0, with_ig_parts=True):
    g = torch.Generator().manual_seed(seed)
    parts = {}
    if with_ig_parts:
        parts = dict(
            completeness={"heads": {"target": torch.randn(3, 2, generator=g), "error": torch.rand(3, 2, generator=g)}},
            path_profile={"heads": torch.randn(3, 2, 4, 4, generator=g)},
        )
    return Attribution(
        method="integrated_gradients", direction="noising",
        heads=torch.randn(3, 2, 4, generator=g), neurons=torch.full((3, 2, 8), float("nan")),
        clean_metric=torch.randn(3, generator=g), corrupted_metric=torch.randn(3, generator=g),
        meta={"model": "tiny-gpt2-s0", "layers": [0, 1]}, seconds=1.5, **parts,
    )


KEY = result_key(model="tiny-gpt2-s0", task="ioi", seed=0, n=3, method="ig", direction="noising", n_steps=8)


def test_round_trip(tmp_path):
    original = _result()
    save(original, tmp_path / "r", KEY)
    back = load(tmp_path / "r", KEY)
    assert (back.method, back.direction, back.meta, back.seconds) == (original.method, original.direction, original.meta, 1.5)
    assert torch.equal(back.heads, original.heads) and back.neurons.isnan().all()
    assert torch.equal(back.completeness["heads"]["error"], original.completeness["heads"]["error"])
    assert torch.equal(back.path_profile["heads"], original.path_profile["heads"])
    plain = _result(with_ig_parts=False)
    save(plain, tmp_path / "p", KEY)
    assert load(tmp_path / "p", KEY).completeness is None


def test_a_different_key_is_an_error_not_a_reuse(tmp_path):
    save(_result(), tmp_path / "r", KEY)
    other = {**KEY, "n_steps": 16}
    with pytest.raises(ResultKeyError, match="computed with other n_steps") as err:
        load(tmp_path / "r", other)
    assert "\n" not in str(err.value)
    assert "ig_ap_version" in KEY


def test_cached_computes_once_and_misses_on_a_changed_parameter(tmp_path):
    calls = []

    def compute(seed):
        calls.append(seed)
        return _result(seed)

    first = cached(tmp_path, KEY, lambda: compute(0))
    again = cached(tmp_path, KEY, lambda: compute(1))
    assert calls == [0] and torch.equal(first.heads, again.heads)
    changed = {**KEY, "seed": 1}
    assert result_name(changed) != result_name(KEY)
    cached(tmp_path, changed, lambda: compute(1))
    assert calls == [0, 1]


def test_an_interrupted_or_damaged_write_leaves_nothing_that_loads(tmp_path, monkeypatch):
    import ig_ap.storage as storage

    # The write dies after the tensors file is in place, before the JSON: nothing loads, no temporary is left.
    real_replace = storage.os.replace
    def die_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt
        return real_replace(src, dst)
    monkeypatch.setattr(storage.os, "replace", die_on_json)
    with pytest.raises(KeyboardInterrupt):
        save(_result(), tmp_path / "r", KEY)
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert not list(tmp_path.glob(".*")), "temporary files were left behind"
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "r", KEY)

    # A complete result whose tensors file is then truncated no longer loads, and cached() recomputes it.
    path = tmp_path / result_name(KEY)
    save(_result(), path, KEY)
    tensors = path.with_suffix(".safetensors")
    tensors.write_bytes(tensors.read_bytes()[:100])
    with pytest.raises(FileNotFoundError):
        load(path, KEY)
    recomputed = cached(tmp_path, KEY, lambda: _result(2))
    assert torch.equal(recomputed.heads, _result(2).heads)
    assert json.loads(path.with_suffix(".json").read_text())["key"] == KEY


def test_keys_must_be_json():
    with pytest.raises(TypeError):
        result_key(model=object())


def test_a_real_kernel_result_is_reused(tmp_path, tiny_gpt2):
    from ig_ap.ig import integrated_gradients
    from ig_ap.tasks import make_dataset

    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    key = result_key(model="tiny-gpt2-s0", task="ioi", seed=0, n=2, method="ig", direction="denoising", n_steps=4)
    first = cached(tmp_path, key, lambda: integrated_gradients(tiny_gpt2, batch, n_steps=4, progress=False))
    second = cached(tmp_path, key, lambda: pytest.fail("recomputed a cached result"))
    assert torch.equal(first.neurons, second.neurons)
    assert torch.equal(first.completeness["neurons"]["relative"], second.completeness["neurons"]["relative"])
    assert second.meta["n_steps"] == 4


def test_compute_keys_on_dataset_and_options(tmp_path, tiny_gpt2):
    from ig_ap.results import compute
    from ig_ap.tasks import make_dataset

    data = make_dataset("ioi", tiny_gpt2, n=2, seed=0)
    first = compute(tiny_gpt2, data, "atp", directory=tmp_path, components=("heads",))
    assert len(list(tmp_path.glob("*.json"))) == 1
    again = compute(tiny_gpt2, data, "atp", directory=tmp_path, components=("heads",), device="cpu")  # speed option: same key
    assert torch.equal(first.heads, again.heads) and len(list(tmp_path.glob("*.json"))) == 1
    compute(tiny_gpt2, make_dataset("ioi", tiny_gpt2, n=2, seed=1), "atp", directory=tmp_path, components=("heads",))
    assert len(list(tmp_path.glob("*.json"))) == 2
    with pytest.raises(ValueError, match="unknown kernel"):
        compute(tiny_gpt2, data, "shap", directory=tmp_path)


def test_memo_computes_once_per_key_and_misses_when_options_change(tmp_path, tiny_gpt2):
    from ig_ap.results import memo
    from ig_ap.tasks import make_dataset

    data = make_dataset("ioi", tiny_gpt2, n=2, seed=0)
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).view(2, 3) * len(calls)

    first = memo(tiny_gpt2, data, "thing", compute, directory=tmp_path, modules=("heads",), senders=[[0, 1]])
    again = memo(tiny_gpt2, data, "thing", compute, directory=tmp_path, modules=("heads",), senders=[[0, 1]])
    torch.testing.assert_close(first, again)
    assert len(calls) == 1
    other = memo(tiny_gpt2, data, "thing", compute, directory=tmp_path, modules=("heads",), senders=[[1, 1]])
    assert len(calls) == 2 and not torch.equal(other, first)
    # a damaged tensors file is not reused
    for f in tmp_path.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:-3])
    memo(tiny_gpt2, data, "thing", compute, directory=tmp_path, modules=("heads",), senders=[[0, 1]])
    assert len(calls) == 3


def test_ap_of_neurons_on_a_random_sample_and_the_top_of_other_methods(tmp_path, tiny_gpt2):
    from ig_ap.analysis import random_per_layer, restrict
    from ig_ap.atp import attribution_patching
    from ig_ap.patching import activation_patching
    from ig_ap.results import compute_ap_neurons, neuron_subsets
    from ig_ap.tasks import make_dataset

    data = make_dataset("ioi", tiny_gpt2, n=2, seed=0)
    atp = attribution_patching(tiny_gpt2, data.batch(), progress=False)
    subsets = neuron_subsets([atp], 5, seed=3)
    assert subsets["random"].sum(1).tolist() == [5, 5] and subsets["top"].sum(1).tolist() == [5, 5]
    assert torch.equal(subsets["random"], random_per_layer(2, atp.neurons.shape[2], 5, seed=3))  # seeded
    assert not torch.equal(subsets["random"], random_per_layer(2, atp.neurons.shape[2], 5, seed=4))
    top_magnitude = atp.neurons.abs().mean(0)
    assert (top_magnitude[subsets["top"]].min() >= top_magnitude[~subsets["top"]].view(2, -1).max(1).values.min())
    ours = compute_ap_neurons(tiny_gpt2, data, "denoising", subsets, directory=tmp_path, progress=False)
    union = subsets["random"] | subsets["top"]
    assert torch.equal(~ours.neurons[0].isnan(), union)
    reference = activation_patching(tiny_gpt2, data.batch(), components="neurons", progress=False,
                                    neurons={l: row.nonzero().flatten().tolist() for l, row in enumerate(union)})
    torch.testing.assert_close(ours.neurons, reference.neurons, equal_nan=True)
    assert restrict(ours.neurons, subsets["random"]).isfinite().sum() == 2 * 10


def test_atomic_writes_get_the_permissions_of_a_file_created_in_place(tmp_path):
    import os

    from ig_ap.storage import write_files_atomically

    umask = os.umask(0o022)
    try:
        write_files_atomically([tmp_path / "a.csv"], [lambda tmp: tmp.write_text("x\n")])
    finally:
        os.umask(umask)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644  # a published site's files are readable by its server

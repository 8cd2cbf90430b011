"""Sweeps on a local Ray instance: sharded equals unsharded, a killed worker is retried, a stopped sweep resumes.

Ray must run inside a private network namespace here (DESIGN.md, "Scale"); ``make test``
runs the suite in one (``unshare -rn``), and these tests refuse to start Ray outside it.
"""

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch

from ig_ap import export, results, sweep
from ig_ap.tasks import make_dataset

SPEC = {
    "name": "tiny",
    "models": ["tiny-gpt2"],
    "tasks": ["ioi"],
    "directions": ["denoising", "noising"],
    "n_prompts": 5,
    "shards": {"prompts": 2, "layers": 1},  # prompt ranges 0-1, 2-3, 4: uneven on purpose
    "methods": {
        "ap": {"kernel": "ap", "components": ["heads"]},
        "ap_neurons": {"kernel": "ap", "components": ["neurons"], "neurons": {0: [1, 5, 7], 1: [0, 2]}},
        "ig": {"kernel": "ig", "n_steps": 4},
        "ig_tolerance": {"kernel": "ig", "components": ["heads"], "n_steps": 2, "tolerance": 0.01, "max_steps": 8,
                         "context": "baseline", "directions": ["denoising"]},
    },
}


@pytest.fixture(autouse=True)
def private_network():
    """Ray binds to the machine's interface unless only loopback exists: refuse to start it elsewhere."""
    interfaces = sorted(name for _, name in socket.if_nameindex())  # this network namespace's
    if interfaces != ["lo"]:
        pytest.fail(f"the sweep tests start Ray and must run in a private network namespace (interfaces here: "
                    f"{', '.join(interfaces)}); run them with `make test`, which wraps pytest in `unshare -rn`")


def _plan(tmp_path, **changes):
    return sweep.plan(sweep.load_spec({**SPEC, **changes}), tmp_path)


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_sharded_sweep_merges_to_the_unsharded_kernels(tmp_path, tiny_gpt2):
    plan = _plan(tmp_path)
    # 3 prompt ranges × 2 layers per result, except IG to a tolerance (layers only: its steps depend on every prompt)
    assert len(plan.results) == 7
    assert len(plan.shards) == 6 * 6 + 1 * 2
    report = sweep.run(plan, workers=2, progress=False)
    assert not report.failed and len(report.ran) == len(plan.shards) and len(report.merged) == len(plan.results)

    for result in plan.results:
        merged = results.load(result.path(tmp_path), result.key)
        whole = results.KERNELS[result.method.kernel](tiny_gpt2, result.dataset.batch(), direction=result.direction,
                                                      progress=False, **result.method.options)
        # float32 sums over another batch composition differ in the last bits: 1e-6 of the metric's scale
        scale = 1e-6 * max(whole.clean_metric.abs().max(), whole.corrupted_metric.abs().max()).item()
        for field in ("heads", "neurons", "clean_metric", "corrupted_metric"):
            a, b = getattr(merged, field), getattr(whole, field)
            assert (a is None) == (b is None), (result, field)
            if a is not None:
                assert torch.equal(a.isnan(), b.isnan()), (result, field)  # the same components computed
                torch.testing.assert_close(a, b, atol=scale, rtol=0, equal_nan=True, msg=f"{result} {field}")
        if whole.completeness:
            for kind, table in whole.completeness.items():
                assert torch.equal(merged.completeness[kind]["steps"], table["steps"]), result
                torch.testing.assert_close(merged.completeness[kind]["target"], table["target"], atol=scale, rtol=0,
                                           equal_nan=True)
            for kind, profile in whole.path_profile.items():
                torch.testing.assert_close(merged.path_profile[kind], profile, atol=scale, rtol=0, equal_nan=True)
        assert merged.meta["shards"] == len(result.shards) and merged.meta["n_prompts"] == 5

    # The chapters' own call finds the merged result under its key: no computation.
    data = make_dataset("ioi", tiny_gpt2, n=5, seed=0)
    found = results.compute(tiny_gpt2, data, "ap", "noising", directory=tmp_path, components=("heads",), progress=False)
    assert found.meta.get("shards") == 6

    # Export: one row per prompt and computed component of the 7 merged results (shards left out).
    out = export.export(tmp_path, tmp_path / "export" / "all.parquet")
    table = pd.read_parquet(out)
    expected = sum(int((~results.load(r.path(tmp_path), r.key)[kind].isnan()).sum()) for r in plan.results
                   for kind in ("heads", "neurons") if getattr(results.load(r.path(tmp_path), r.key), kind) is not None)
    assert len(table) == expected
    assert list(table.columns) == list(export.EXPORT_COLUMNS)
    row = table[(table.method == "ap") & (table.direction == "noising") & (table.kind == "heads")].iloc[7]
    assert row.score == pytest.approx(found.heads[row.prompt, row.layer, row.component].item())


def test_a_worker_killed_mid_shard_is_retried(tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(sweep.CRASH_ONCE, str(marker))  # Ray's workers inherit the driver's environment
    plan = _plan(tmp_path / "results", methods={"ap": SPEC["methods"]["ap"]}, directions=["denoising"])
    report = sweep.run(plan, workers=2, progress=False)
    assert marker.exists()  # one worker process did exit in the middle of a shard
    assert not report.failed and len(report.ran) == len(plan.shards) == 6
    expected = {f"{r.path(Path('.'))}{suffix}" for r in plan.results for suffix in (".json", ".safetensors")}
    expected |= {f"{s.path(Path('.'))}{suffix}" for s in plan.shards for suffix in (".json", ".safetensors")}
    assert _files(tmp_path / "results") == expected  # exactly the results, nothing half-written, no failure records


def test_an_interrupted_sweep_runs_only_the_missing_shards(tmp_path):
    plan = _plan(tmp_path, methods={"ig": SPEC["methods"]["ig"]})
    total, stop_after = len(plan.shards), 4
    landed = []

    def interrupt(shard):
        landed.append(shard)
        if len(landed) == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run(plan, workers=1, progress=False, on_shard=interrupt)
    state = sweep.status(plan)
    assert len(state.done) == stop_after and len(state.pending) == total - stop_after and state.merged == 0
    assert "ETA" in state.report(workers=2)

    report = sweep.run(plan, workers=2, progress=False)
    assert len(report.ran) == total - stop_after
    assert not {s.name for s in report.ran} & {s.name for s in landed}  # nothing ran twice
    assert len(report.merged) == len(plan.results) and sweep.status(plan).merged == len(plan.results)
    assert sweep.run(plan, workers=2, progress=False).ran == []  # all there: Ray is not even started


def test_a_failing_shard_is_recorded_and_reported(tmp_path, capsys):
    spec = {**SPEC, "methods": {"bad": {"kernel": "ig", "method": "no-such-rule"}}, "directions": ["denoising"]}
    plan = sweep.plan(sweep.load_spec(spec), tmp_path)
    report = sweep.run(plan, workers=2, progress=False)
    assert len(report.failed) == len(plan.shards) and not report.merged
    state = sweep.status(plan)
    assert len(state.failed) == len(plan.shards)
    assert "unknown IG method 'no-such-rule'" in state.failed[0][1]
    assert "failed:" in state.report(workers=1)


@pytest.mark.parametrize("change, message", [
    ({"tasks": ["ioi", "arithmetic"]}, "unknown task 'arithmetic'"),
    ({"models": ["no-such-model"]}, "unknown model 'no-such-model'"),
    ({"methods": {"ap": {"kernel": "ap", "n_steps": 4}}}, "kernel 'ap' takes no option n_steps"),
    ({"methods": {"x": {"kernel": "eap"}}}, "unknown kernel 'eap'"),
    ({"shards": {"prompts": 0}}, "shards.prompts must be a positive int"),
    ({"workers": 3}, "unknown spec key(s) workers"),
    ({"directions": ["up"]}, "unknown direction 'up'"),
    ({"methods": {"ap": {"kernel": "ap", "layers": []}}}, "layers must be a non-empty list"),
    ({"methods": {"ap": {"kernel": "ap", "layers": [0, 9]}}}, "are not all layers of tiny-gpt2 (0 … 1)"),
])
def test_a_bad_spec_fails_in_one_line_before_ray_starts(tmp_path, capsys, change, message):
    import ray

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({**SPEC, **change}))  # JSON is YAML
    assert sweep.main(["run", str(path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not ray.is_initialized() and not (tmp_path / "r").exists()


def test_overrides_set_spec_keys_and_method_options():
    spec = sweep.load_spec(SPEC, overrides=["n_prompts=3", "n_steps=8", "shards={prompts: 3}"])
    assert spec.n_prompts == 3 and spec.prompts_per_shard == 3
    assert [m.options.get("n_steps") for m in spec.methods] == [None, None, 8, 8]
    with pytest.raises(sweep.SpecError, match="neither a spec key"):
        sweep.load_spec(SPEC, overrides=["no_such_option=1"])


def test_read_only_results_name_the_spec_that_produces_a_missing_one(tmp_path, tiny_gpt2):
    from ig_ap.book import Chapter
    from ig_ap.models import model_info

    data = make_dataset("ioi", tiny_gpt2, n=100, seed=0)
    chapter = Chapter(tiny_gpt2, model_info(tiny_gpt2), {}, results=tmp_path, read_only=True)
    with pytest.raises(results.MissingResultError, match=r"sweeps/book-gpu\.yaml") as error:
        chapter.compute(data, "ap", "denoising", components=("heads",))
    assert len(str(error.value).splitlines()) == 1
    with pytest.raises(results.MissingResultError, match="no known sweep spec holds it"):
        chapter.compute(data, "ap", "denoising", components=("heads",), share_prefix=False)
    with pytest.raises(results.MissingResultError, match="no result for ap denoising"):  # the package alone: no spec named
        results.compute(tiny_gpt2, data, "ap", "denoising", directory=tmp_path, read_only=True, components=("heads",))
    assert not list(tmp_path.iterdir())  # read-only: nothing was computed or written


def test_the_book_reads_a_sweep_of_its_own_spec_without_computing(tmp_path):
    """sweeps/book-gpu.yaml, scaled down to the tiny model, holds every attribution chapters 2-4 and 6 ask for (chapter 6
    computes its joint patches itself, into the chapter cache, not the sweep's folder)."""
    from ig_ap import book

    scaled = ["models=[tiny-gpt2]", "tasks=[ioi]", "n_prompts=3", "device=cpu", "n_steps=4"]
    plan = sweep.plan(sweep.load_spec(sweep.SPECS / "book-gpu.yaml", overrides=scaled), tmp_path / "results")
    assert not sweep.run(plan, workers=2, progress=False).failed
    filled = _files(tmp_path / "results")
    parameters = {"model": "tiny-gpt2", "device": "cpu", "tasks": "ioi", "n_prompts": 3, "n_prompts_neurons": 3,
                  "ig_steps": 4, "neurons": "all", "n_resamples": 50, "toy_seeds": 2, "results": str(tmp_path / "results")}
    for stem in ("02_aligned_baselines", "03_latent_components", "04_and_or_toy_models", "06_why_they_disagree"):
        executed = book.execute_chapter(book.ROOT / "book" / f"{stem}.ipynb", tmp_path / "executed", parameters)
        assert "Attributions read from the sweep results" in executed.read_text(), stem
    assert _files(tmp_path / "results") == filled  # read only: nothing computed into the sweep's folder
    # Another quadrature is not in the sweep: the chapter stops at once and says what is missing.
    with pytest.raises(book.ChapterFailed, match="MissingResultError: no result for ig denoising of tiny-gpt2-s0 on ioi"):
        book.execute_chapter(book.ROOT / "book" / "03_latent_components.ipynb", tmp_path / "other", {**parameters, "ig_steps": 5})

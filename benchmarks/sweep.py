"""Sweeps: one process against a local Ray sweep on the same shards, and a cost estimate for a whole spec.

``compare`` (the default): the shards of one small spec (the embedded model, IOI, AP of
every head and IG of the heads, cut into prompt ranges and layer groups) are run twice,
side by side in one run, into two fresh results folders:

(a) one process with 2 torch threads runs the shards one after the other
    (``ig_ap.sweep.execute_shard`` in a loop: no Ray);
(b) a local Ray instance with 2 workers × 1 thread (``ig_ap.sweep.run``).

It prints both wall times and their ratio, the time Ray takes to start, and Ray's
overhead per shard: (b)'s worker-seconds not spent inside a shard's computation (task
dispatch, result transfer, each worker's first model load), divided by the shards.
The two results folders must hold the same numbers; the script checks it.

``estimate SPEC``: runs one shard of each method of SPEC in this process (the middle
layer group of the first result's first prompt range, whose cost is about the mean: a
layer's passes run every layer above it)
(``--set`` overrides as for ``python -m ig_ap.sweep``) and prints, per method, the
measured seconds per shard, the number of shards and the CPU- or GPU-hours of the whole
sweep (shard seconds × shards; threads × that for CPU-hours).

Ray runs inside a private network namespace on this project's machines: the script
re-executes itself under ``unshare -rn`` when other interfaces than loopback exist.

    .venv/bin/python benchmarks/sweep.py                          # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/sweep.py estimate sweeps/notebooks-full.yaml --set models=[smollm2-135m] --set device=cpu
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

from ig_ap import results, sweep

COMPARE_SPEC = {
    "name": "bench",
    "models": ["smollm2-135m"],
    "tasks": ["ioi"],
    "directions": ["denoising"],
    "n_prompts": 8,
    "device": "cpu",
    "threads": 1,
    "shards": {"prompts": 4, "layers": 10},
    "methods": {"ap": {"kernel": "ap", "components": ["heads"]}, "ig": {"kernel": "ig", "components": ["heads"], "n_steps": 8}},
}


def _in_private_network() -> bool:
    return sorted(name for _, name in socket.if_nameindex()) == ["lo"]


def _same_numbers(plan_a: sweep.Plan, plan_b: sweep.Plan) -> float:
    """Largest difference between the merged results of two plans of one spec (they must exist)."""
    worst = 0.0
    for a, b in zip(plan_a.results, plan_b.results):
        x, y = results.load(a.path(plan_a.directory), a.key), results.load(b.path(plan_b.directory), b.key)
        for kind in ("heads", "neurons"):
            if getattr(x, kind) is not None:
                worst = max(worst, (x[kind] - y[kind]).nan_to_num(0).abs().max().item())
    return worst


def compare() -> None:
    spec = sweep.load_spec(COMPARE_SPEC)
    work = Path(tempfile.mkdtemp(prefix="ig_ap-sweep-bench-"))
    try:
        one, ray_dir = work / "one-process", work / "ray"
        plan_one, plan_ray = sweep.plan(spec, one), sweep.plan(spec, ray_dir)
        n = len(plan_one.shards)
        print(f"{n} shards: {', '.join(f'{r} ({len(r.shards)})' for r in plan_one.results)}; "
              f"{spec.n_prompts} prompts, {spec.prompts_per_shard} per shard")

        # (a) one process, 2 threads, the shards in a loop (the model loaded once, as a worker would)
        torch.set_num_threads(2)
        started = time.perf_counter()
        inside_one = 0.0
        for shard in plan_one.shards:
            work_item = sweep.shard_work(spec, shard, one)
            work_item.threads = 2
            inside_one += sweep.execute_shard(work_item)
        sweep.merge(plan_one)
        wall_one = time.perf_counter() - started

        # (b) Ray: 2 workers × 1 thread
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        started = time.perf_counter()
        report = sweep.run(plan_ray, workers=2, progress=False)
        wall_ray = time.perf_counter() - started
        ray.shutdown()
        assert not report.failed, report.failed
        inside_ray = sum(results.find(s.path(ray_dir), s.key).seconds for s in plan_ray.shards)
        overhead = (2 * wall_ray - inside_ray) / n

        worst = _same_numbers(plan_one, plan_ray)
        print(f"(a) one process, 2 threads:   {wall_one:7.1f} s  ({inside_one:.1f} s inside shards)")
        print(f"(b) Ray, 2 workers x 1 thread: {wall_ray:7.1f} s  ({inside_ray:.1f} worker-s inside shards), "
              f"plus {ray_start:.1f} s to start Ray")
        print(f"ratio (a) / (b): {wall_one / wall_ray:.2f}  (with Ray's start: {wall_one / (wall_ray + ray_start):.2f})")
        print(f"Ray's overhead per shard: {overhead:.2f} worker-s (dispatch, transfer, each worker's first model load)")
        print(f"largest difference between (a) and (b): {worst:.2e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def estimate(path: str, overrides: list[str]) -> None:
    spec = sweep.load_spec(path, overrides=overrides)
    work = Path(tempfile.mkdtemp(prefix="ig_ap-sweep-estimate-"))
    try:
        planned = sweep.plan(spec, work)
        torch.set_num_threads(spec.threads)
        unit = "GPU-hours" if spec.device == "cuda" else "CPU-hours"
        print(f"{spec.name}: {len(planned.results)} results, {len(planned.shards)} shards; device {spec.device}, "
              f"{spec.threads} thread(s) per shard")
        print(f"| method | shards | s per shard (measured) | {unit} |")
        print("| --- | --- | --- | --- |")
        total = 0.0
        for method in spec.methods:
            shards = [s for s in planned.shards if s.result.method is method]
            # A layer's passes run every layer above it: the middle layer group of the first prompt range costs the mean.
            first_range = [s for s in shards if s.prompts == shards[0].prompts and s.result is shards[0].result]
            typical = first_range[len(first_range) // 2]
            item = sweep.shard_work(spec, typical, work)
            sweep._worker_model(item.model, item.device, item.seed)  # loaded before the clock starts
            started = time.perf_counter()
            sweep.execute_shard(item)
            if spec.device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            hours = seconds * len(shards) * (spec.threads if spec.device == "cpu" else 1) / 3600
            total += hours
            print(f"| {method.name} ({typical}) | {len(shards)} | {seconds:.1f} | {hours:.1f} |")
        print(f"| all | {len(planned.shards)} | | {total:.1f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("compare", help="one process vs a local Ray sweep (default)")
    est = sub.add_parser("estimate", help="time one shard of each method of a spec; the whole sweep's cost")
    est.add_argument("spec")
    est.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.command == "estimate":
        estimate(args.spec, args.set)
        return
    if not _in_private_network():  # Ray binds to loopback only where loopback is all there is
        os.execvp("unshare", ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, *sys.argv])
    compare()


if __name__ == "__main__":
    main()

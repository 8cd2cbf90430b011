"""Cold and warm load time, and peak memory, of the embedded model.

Each load runs in a fresh Python process (so the numbers include nothing cached in
memory) against a fresh cache folder: the first load dequantizes the GGUF and writes the
float32 cache, the second reads it. Run from the repository root:

    .venv/bin/python benchmarks/load_model.py
"""

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, time
t0 = time.perf_counter()
import torch
from ig_ap.models import load_model
t1 = time.perf_counter()
model = load_model("smollm2-135m", device="cpu")
t2 = time.perf_counter()
with torch.no_grad():
    model(torch.tensor([[2427, 5099, 284, 2322]]), return_type="logits")
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(cache: str) -> dict:
    env = {**os.environ, "IG_AP_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)
        warm = [run(cache) for _ in range(3)]
    best = min(warm, key=lambda r: r["load_s"])
    print("| embedded model | load_model time | import time | peak RSS |")
    print("| --- | --- | --- | --- |")
    print(f"| cold (dequantize GGUF, write cache) | {cold['load_s']:.1f} s | {cold['import_s']:.1f} s | {cold['peak_rss_mib']:.0f} MiB |")
    print(f"| warm (read verified cache), best of 3 | {best['load_s']:.1f} s | {best['import_s']:.1f} s | {best['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()

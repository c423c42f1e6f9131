"""``make accel-check``: the JAX-only correctness tier, then the benchmark, on the backend JAX
finds (a GPU or TPU when one is lent), written to ``docs/results/accelerator.md``.

float32 parity on an accelerator needs float32 matmuls (TF32 and bfloat16 are their defaults),
so the tier runs with ``JAX_DEFAULT_MATMUL_PRECISION=highest``; jaxgru's own GPU/TPU defaults
(``execution.for_backend``) already ask for ``precision="highest"``.

    python experiments/accelerator_check.py                    # the tier, then S, M, L
    python experiments/accelerator_check.py --sizes smoke --rounds 1 -- -k test_gru  # a try
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK_TIER = "not oracle and not multiprocess and not benchmark"


def _backend() -> dict:
    code = (
        "import jax, json; d = jax.devices()[0]; print(json.dumps({'backend': "
        "jax.default_backend(), 'device': d.device_kind, 'count': jax.device_count(), "
        "'jax': jax.__version__}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_tier(pytest_args: list[str]) -> tuple[int, str, float]:
    env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", CHECK_TIER,
               *pytest_args]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in run.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    summary = lines[-1].strip("= ") if lines else run.stdout.strip().splitlines()[-1:]
    if run.returncode != 0:
        sys.stdout.write(run.stdout[-6000:])
    return run.returncode, str(summary), seconds


def _benchmark(sizes: str, rounds: int) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.md"
        command = [
            sys.executable,
            str(ROOT / "experiments" / "benchmark.py"),
            "--sizes",
            sizes,
            "--rounds",
            str(rounds),
            "--out",
            str(out),
            "--json",
            str(ROOT / "docs" / "results" / "accelerator-benchmark.json"),
        ]
        if sizes == "smoke":
            command = [*command[:2], "--smoke", "--out", str(out), "--json",
                       str(Path(tmp) / "bench.json")]  # fmt: skip
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        text = out.read_text() if out.exists() else run.stdout[-4000:] + run.stderr[-4000:]
    return run.returncode, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="S,M,L", help="benchmark sizes, or 'smoke'")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "accelerator.md"))
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from jaxgru._files import atomic_write_text

    machine = _backend()
    print(f"backend: {machine}", flush=True)
    code, summary, seconds = _check_tier(args.pytest_args)
    print(f"check tier: {summary} ({seconds:.0f} s)", flush=True)
    bench_code, bench = _benchmark(args.sizes, args.rounds)
    extra = f" -- {' '.join(args.pytest_args)}" if args.pytest_args else ""
    command = (f"python experiments/accelerator_check.py --sizes {args.sizes} "
               f"--rounds {args.rounds}{extra}")  # fmt: skip
    text = "\n".join([
        "# jaxgru on an accelerator", "",
        f"Written by `make accel-check`. Reproduce with:\n\n    {command}\n",
        f"Backend: {machine['backend']} ({machine['count']} x {machine['device']}), "
        f"jax {machine['jax']}.", "",
        "## The JAX-only correctness tier (`make check`'s tests, float32 matmuls)", "",
        f"{'passed' if code == 0 else 'FAILED'}: {summary}, in {seconds:.0f} s.", "",
        "## The benchmark (`make bench`'s workload)", "",
        bench if bench_code == 0 else f"The benchmark failed:\n\n```\n{bench}\n```",
    ])  # fmt: skip
    atomic_write_text(Path(args.out), text.rstrip() + "\n")
    print(f"wrote {args.out}")
    return code or bench_code


if __name__ == "__main__":
    sys.exit(main())

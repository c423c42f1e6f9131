"""Long sequences and mixed precision, measured: memory against T with and without remat, and
the speed of bfloat16 compute against float32.

Memory: one train step (forward, backward) of GRU(64) -> Dense(1), batch 16, one feature, for
each sequence length T, with ``remat_chunk`` off and at 100. Each point runs in a fresh
process and reports XLA's temporary buffers for the compiled step
(``Compiled.memory_analysis``: what the step allocates besides its inputs and outputs) and the
process's peak resident memory (``ru_maxrss``) after the step, less the peak before compiling.

Speed: one train step (forward, backward, Adam) at the benchmark's sizes S, M and L, float32
against ``compute_dtype="bfloat16"``, interleaved in one process (each timing is the median of
``reps`` calls; the table gives the median over rounds), on JAX's default backend.

    python experiments/scale.py            # writes docs/scale.md and docs/results/scale.json
    python experiments/scale.py --quick    # T up to 5,000, one round (a minute)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [1_000, 2_500, 5_000, 10_000, 20_000]
REMAT_CHUNK = 100
MEMORY_SHAPE = {"batch": 16, "features": 1, "units": 64}
SPEED_SIZES = {  # (batch, time, features, units), as experiments/benchmark.py
    "S": (32, 50, 8, 32),
    "M": (64, 100, 32, 128),
    "L": (128, 200, 64, 256),
}


def memory_point(time_steps: int, remat_chunk: int | None) -> dict:
    """Runs in a fresh process: one train step at ``time_steps``; its memory and time."""
    import jax
    import jax.numpy as jnp

    import jaxgru

    b, f, u = MEMORY_SHAPE["batch"], MEMORY_SHAPE["features"], MEMORY_SHAPE["units"]
    model = jaxgru.Sequential([jaxgru.GRU(u), jaxgru.Dense(1)], input_shape=(time_steps, f))
    model = model.with_execution(remat_chunk=remat_chunk)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, time_steps, f)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(b, 1)).astype(np.float32))

    def loss(params):
        return jnp.mean((model.apply(params, x) - y) ** 2)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    jax.block_until_ready(compiled(params))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "time_steps": time_steps,
        "remat_chunk": remat_chunk,
        "xla_temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "peak_rss_growth_mb": (after - before) / 1024,
        "step_ms": 1e3 * float(np.median(times)),
    }


def measure_memory(lengths: list[int]) -> list[dict]:
    points = []
    for t in lengths:
        for chunk in (None, REMAT_CHUNK):
            cmd = [sys.executable, __file__, "--memory-point", str(t), str(chunk or 0)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            points.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(points[-1], flush=True)
    return points


def measure_speed(rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxgru

    results = {}
    for size, (b, t, f, u) in SPEED_SIZES.items():
        model = jaxgru.Sequential([jaxgru.GRU(u), jaxgru.Dense(1)], input_shape=(t, f))
        params = model.init(jax.random.key(0))
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(b, t, f)).astype(np.float32))
        y = jnp.asarray(rng.normal(size=(b, 1)).astype(np.float32))
        optimizer = optax.adam(1e-3)
        steps = {
            dtype: _train_step(model.with_execution(compute_dtype=dtype), optimizer, x, y)
            for dtype in ("float32", "bfloat16")
        }
        reps = {"S": 30, "M": 10, "L": 4}[size]
        medians = {dtype: [] for dtype in steps}
        for _ in range(rounds):
            for dtype, step in steps.items():  # interleaved
                state = (params, optimizer.init(params))
                jax.block_until_ready(step(*state))
                times = []
                for _ in range(reps):
                    start = time.perf_counter()
                    jax.block_until_ready(step(*state))
                    times.append(time.perf_counter() - start)
                medians[dtype].append(1e3 * float(np.median(times)))
        results[size] = {dtype: float(np.median(m)) for dtype, m in medians.items()}
        results[size]["ratio"] = results[size]["bfloat16"] / results[size]["float32"]
        print(size, results[size], flush=True)
    return results


def _train_step(model, optimizer, x, y):
    """The jitted ``step(params, opt_state) -> (params, opt_state, loss)``: MSE, ``optimizer``."""
    import jax
    import jax.numpy as jnp
    import optax

    def step(params, opt_state):
        def loss(p):
            return jnp.mean((model.apply(p, x) - y) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step)


def device_description() -> str:
    import jax
    from benchmark import machine  # the host line of docs/benchmarks.md

    kind = getattr(jax.devices()[0], "device_kind", "")
    return f"{jax.default_backend()} ({kind}); {machine()}"


def render(results: dict) -> str:
    lines = [
        "# Long sequences and mixed precision",
        "",
        f"Measured with `{results['command']}` on {results['device']}, jax {results['jax']}.",
        "",
        "## Peak memory against sequence length, with and without remat",
        "",
        f"One train step of GRU({MEMORY_SHAPE['units']}) -> Dense(1), batch "
        f"{MEMORY_SHAPE['batch']}, {MEMORY_SHAPE['features']} feature; remat is "
        f"`remat_chunk = {REMAT_CHUNK}`. *XLA temp* is the compiled step's temporary buffers; "
        "*peak RSS growth* is the process's peak resident memory after the step less its peak "
        "before compiling (it includes the compiler's own memory).",
        "",
        "| T | XLA temp, no remat | XLA temp, remat | peak RSS growth, no remat | "
        "peak RSS growth, remat | step, no remat | step, remat |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_t = {}
    for p in results["memory"]:
        by_t.setdefault(p["time_steps"], {})[p["remat_chunk"]] = p
    for t, pair in sorted(by_t.items()):
        plain, remat = pair[None], pair[REMAT_CHUNK]
        lines.append(
            f"| {t:,} | {plain['xla_temp_mb']:.1f} MB | {remat['xla_temp_mb']:.1f} MB | "
            f"{plain['peak_rss_growth_mb']:.0f} MB | {remat['peak_rss_growth_mb']:.0f} MB | "
            f"{plain['step_ms']:.0f} ms | {remat['step_ms']:.0f} ms |"
        )
    lines += [
        "",
        "Without remat the backward pass keeps every step's gates, so its memory grows "
        "linearly with T; with remat it keeps one state per chunk and one chunk's gates.",
        "",
        "## bfloat16 compute against float32, train step",
        "",
        'GRU(u) -> Dense(1), Adam; `compute_dtype = "bfloat16"` runs the matmuls in '
        "bfloat16 with float32 accumulation, carry and master params. Ratio = bfloat16 / "
        "float32 time (below 1 is faster).",
        "",
        "| size (batch, time, features, units) | float32 | bfloat16 | ratio |",
        "|---|---:|---:|---:|",
    ]
    for size, r in results["speed"].items():
        shape = ", ".join(map(str, SPEED_SIZES[size]))
        lines.append(
            f"| {size} ({shape}) | {r['float32']:.2f} ms | {r['bfloat16']:.2f} ms | "
            f"{r['ratio']:.2f}x |"
        )
    lines += ["", results["speed_note"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T up to 5,000, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--memory-point", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_point:
        t, chunk = args.memory_point
        print(json.dumps(memory_point(t, chunk or None)))
        return
    import jax

    lengths = [t for t in LENGTHS if t <= 5_000] if args.quick else LENGTHS
    rounds = 1 if args.quick else args.rounds
    backend = jax.default_backend()
    results = {
        "command": "python experiments/scale.py" + (" --quick" if args.quick else ""),
        "device": device_description(),
        "jax": jax.__version__,
        "memory": measure_memory(lengths),
        "speed": measure_speed(rounds),
        "speed_note": (
            "Measured on a GPU." if backend == "gpu" else
            f"Measured on {backend.upper()} only: no GPU was lent to this work, so the GPU "
            "speed-up is not measured. On a GPU machine, run the same command."
        ),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results").mkdir(exist_ok=True)
    (args.out / "results" / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "scale.md").write_text(render(results))
    print(f"wrote {args.out / 'scale.md'}")


if __name__ == "__main__":
    main()

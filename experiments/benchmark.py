"""jaxgru against Keras 3 (TF, TF+XLA, JAX backends), Flax, Equinox and PyTorch, side by side.

The workload is the issue's: a many-to-one GRU, then Dense(1), MSE, Adam(1e-3). One train step
is forward, backward and update; inference is one forward pass of the batch. Every peer starts
from the same Keras-layout weights (converted with ``jaxgru.convert``) and the same batch.

Each (peer, mode) runs in a fresh process that measures every size in turn: the first call at a
size (trace and compile included), then ``reps`` timed calls, of which it reports the median.
Rounds are interleaved (every peer once per round, the order rotated each round); the table
gives the median over rounds with the min–max of the round medians, and each ratio divides by
the fastest *other* peer. Modes beyond the base GRU (``reset_after=False``, a masked batch, a
``Bidirectional`` GRU) run against the Keras backends only: Flax, Equinox and PyTorch have no
such layers. jaxgru runs twice: on its default XLA path, and with its oneDNN kernel
(``ExecutionOptions(kernel="onednn")``) where that serves (every mode but the masked one); the
report applies the oneDNN kernel's decision rule to the two.

    python experiments/benchmark.py                 # writes docs/benchmarks.md (make bench)
    python experiments/benchmark.py --smoke         # tiny sizes, one round: every peer runs
                                                    # and the outputs agree (the tests run it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # (batch, time, features, units)
    "S": (32, 50, 8, 32),
    "M": (64, 100, 32, 128),
    "L": (128, 200, 64, 256),
    "smoke": (2, 7, 3, 5),
}
REPS = {"S": 30, "M": 10, "L": 4, "smoke": 2}
KERAS = ["keras_tf", "keras_tf_xla", "keras_jax"]
PEERS = ["jaxgru", "jaxgru_onednn", "jaxgru_onednn_1t", *KERAS, "flax", "equinox", "torch"]
MODES = {  # mode -> the peers that have it
    "base": PEERS,
    "reset_after_false": ["jaxgru", "jaxgru_onednn", *KERAS],
    "masked": ["jaxgru", *KERAS],  # a mask stays on the XLA path
    "bidirectional": ["jaxgru", "jaxgru_onednn", *KERAS],
}
# jaxgru's kernels (XLA; oneDNN on every core, and on one OpenMP thread): never each other's
# peers in a ratio.
OWN = ("jaxgru", "jaxgru_onednn", "jaxgru_onednn_1t")
ONEDNN_PEERS = OWN[1:]
# The oneDNN kernel becomes the CPU default only if its train step is this much faster than
# the XLA path at M and at L (issue #20's decision rule).
ONEDNN_RULE = (1.3, ("M", "L"))
LABELS = {
    "jaxgru": "jaxgru",
    "jaxgru_onednn": "jaxgru, oneDNN kernel",
    "jaxgru_onednn_1t": "jaxgru, oneDNN kernel, 1 thread",
    "keras_tf": "Keras 3, TF backend",
    "keras_tf_xla": "Keras 3, TF, jit_compile",
    "keras_jax": "Keras 3, JAX backend",
    "flax": "Flax linen `RNN(GRUCell)`",
    "equinox": "Equinox `GRUCell` + scan",
    "torch": "PyTorch `nn.GRU`, CPU",
}
VERSIONS = ["jax", "jaxlib", "optax", "keras", "tensorflow-cpu", "flax", "equinox", "torch"]
AGREE_ATOL = 1e-4  # smoke mode: outputs and first losses of every peer against jaxgru's


# ----------------------------------------------------------------------------- the workload
def workload(mode: str, size: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Keras-layout weights (``model.get_weights()`` order), ``x (b, t, f)``, ``y (b, 1)``."""
    b, t, f, u = SIZES[size]
    rng = np.random.default_rng(0)

    def uniform(limit, *shape):
        return rng.uniform(-limit, limit, shape).astype(np.float32)

    def gru_weights():
        bias_shape = (3 * u,) if mode == "reset_after_false" else (2, 3 * u)
        return [
            uniform(np.sqrt(6 / (f + 3 * u)), f, 3 * u),
            uniform(np.sqrt(6 / (4 * u)), u, 3 * u),
            uniform(0.1, *bias_shape),
        ]

    weights = gru_weights() + (gru_weights() if mode == "bidirectional" else [])
    head_in = 2 * u if mode == "bidirectional" else u
    weights += [uniform(np.sqrt(6 / (head_in + 1)), head_in, 1), uniform(0.1, 1)]
    x = rng.normal(size=(b, t, f)).astype(np.float32)
    if mode == "masked":  # right padding with zeros, as Masking(0.0) reads it
        lengths = rng.integers(t // 2, t + 1, size=b)
        x[np.arange(t)[None, :] >= lengths[:, None]] = 0.0
    y = rng.normal(size=(b, 1)).astype(np.float32)
    return weights, x, y


# ----------------------------------------------------------------------------- the peers
# Each builder returns (train_step() -> loss, infer() -> (b, 1) array) on the given weights.
def build_jaxgru(mode, size, weights, x, y, unroll=False, execution=None):
    import jax
    import jax.numpy as jnp

    import jaxgru
    from jaxgru.optimizers import make_optimizer
    from jaxgru.train import Batch, init_train_state, make_train_step

    u = SIZES[size][3]
    gru = jaxgru.GRU(
        u, reset_after=mode != "reset_after_false", unroll=unroll, execution=execution
    )
    layers = [jaxgru.Bidirectional(gru) if mode == "bidirectional" else gru, jaxgru.Dense(1)]
    if mode == "masked":
        layers.insert(0, jaxgru.Masking(mask_value=0.0))
    model = jaxgru.Sequential(layers, input_shape=(None, x.shape[-1]))
    params = jaxgru.from_keras_weights(model, weights)
    optimizer = make_optimizer("adam", 1e-3)
    step = make_train_step(model, optimizer)
    state = init_train_state(model, params, optimizer, len(x))
    ones = jnp.ones(len(x))
    batch = Batch(jnp.asarray(x), jnp.asarray(y), ones, ones)
    predict = jax.jit(model.apply)

    def train():
        nonlocal state
        state, measures = step(state, batch)
        return float(measures["loss"])

    return train, lambda: np.asarray(predict(state.params, batch.x))


def build_jaxgru_onednn(mode, size, weights, x, y, threads=None):
    """jaxgru with ``ExecutionOptions(kernel="onednn")``; refuses to time the XLA path."""
    import jaxgru
    from jaxgru import execution

    options = jaxgru.ExecutionOptions(kernel="onednn", onednn_threads=threads)
    served = execution.serving(jaxgru.GRU(SIZES[size][3], execution=options))
    if served.kernel != "onednn":
        raise RuntimeError(f"the oneDNN kernel does not serve here: {served.reason}")
    return build_jaxgru(mode, size, weights, x, y, execution=options)


def build_keras(backend, mode, size, weights, x, y):
    import keras

    expected = "jax" if backend == "keras_jax" else "tensorflow"
    assert keras.backend.backend() == expected, "run_worker sets KERAS_BACKEND per process"
    _, t, f, u = SIZES[size]
    gru = keras.layers.GRU(u, reset_after=mode != "reset_after_false")
    layers = [keras.Input((t, f))]
    layers += [keras.layers.Masking(0.0)] if mode == "masked" else []
    layers += [keras.layers.Bidirectional(gru) if mode == "bidirectional" else gru]
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.set_weights(weights)
    jit = {"keras_tf": False, "keras_tf_xla": True, "keras_jax": True}[backend]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=jit)
    return lambda: float(model.train_on_batch(x, y)), lambda: np.asarray(model.predict_on_batch(x))


def build_flax(mode, size, weights, x, y):
    import flax.linen as nn
    import jax.numpy as jnp
    import optax

    import jaxgru
    from jaxgru.convert import to_flax

    u = SIZES[size][3]
    cell, cell_vars = to_flax(
        jaxgru.GRU(u), dict(zip(("kernel", "recurrent_kernel", "bias"), weights))
    )

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            h, _ = nn.RNN(cell, return_carry=True, name="rnn")(x)
            return nn.Dense(1, name="head")(h)

    model = Model()
    params = {
        "rnn": {"cell": cell_vars["params"]},
        "head": {"kernel": jnp.asarray(weights[3]), "bias": jnp.asarray(weights[4])},
    }
    return _jax_train_infer(lambda p, x: model.apply({"params": p}, x), params, x, y, optax)


def build_equinox(mode, size, weights, x, y):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import jaxgru
    from jaxgru.convert import to_equinox

    u = SIZES[size][3]
    cell = to_equinox(jaxgru.GRU(u), dict(zip(("kernel", "recurrent_kernel", "bias"), weights)))
    head = eqx.nn.Linear(u, 1, key=jax.random.key(0))
    head = eqx.tree_at(
        lambda m: (m.weight, m.bias), head, (jnp.asarray(weights[3].T), jnp.asarray(weights[4]))
    )

    def forward(model, x):  # x (b, t, f); an equinox cell is unbatched
        cell, head = model

        def one(seq):
            h, _ = jax.lax.scan(lambda h, x_t: (cell(x_t, h), None), jnp.zeros(u), seq)
            return head(h)

        return jax.vmap(one)(x)

    return _jax_train_infer(forward, (cell, head), x, y, optax, filtered=True)


def _jax_train_infer(forward, params, x, y, optax, filtered=False):
    """Adam on MSE for a JAX peer: jit for Flax, equinox's filter_jit for Equinox."""
    import jax
    import jax.numpy as jnp

    optimizer = optax.adam(1e-3)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(p):
        return jnp.mean((forward(p, x) - y) ** 2)

    if filtered:
        import equinox as eqx

        jit, grad = eqx.filter_jit, eqx.filter_value_and_grad
        opt_state = optimizer.init(eqx.filter(params, eqx.is_array))
    else:
        jit, grad = jax.jit, jax.value_and_grad
        opt_state = optimizer.init(params)

    @jit
    def step(p, opt_state):
        loss, grads = grad(loss_fn)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    predict = jit(forward)
    state = [params, opt_state]

    def train():
        state[0], state[1], loss = step(*state)
        return float(loss)

    return train, lambda: np.asarray(predict(state[0], x))


def build_torch(mode, size, weights, x, y):
    import torch

    import jaxgru
    from jaxgru.convert import to_torch_module

    torch.set_num_threads(os.cpu_count() or 1)
    u = SIZES[size][3]
    stack = jaxgru.Sequential([jaxgru.GRU(u)], input_shape=(None, x.shape[-1]))
    gru = to_torch_module(stack, jaxgru.from_keras_weights(stack, weights[:3]), batch_first=True)
    head = torch.nn.Linear(u, 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weights[3].T.copy()))
        head.bias.copy_(torch.from_numpy(weights[4]))
    gru.train()
    optimizer = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def forward(x):
        _, h = gru(x)  # h (layers, b, u)
        return head(h[-1])

    def train():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(forward(xt), yt)
        loss.backward()
        optimizer.step()
        return float(loss)

    def infer():
        with torch.inference_mode():
            return forward(xt).numpy()

    return train, infer


def build(peer, mode, size, weights, x, y):
    if peer.startswith("keras"):
        return build_keras(peer, mode, size, weights, x, y)
    builders = {
        "jaxgru": build_jaxgru,
        "jaxgru_onednn": build_jaxgru_onednn,
        "jaxgru_onednn_1t": lambda *args: build_jaxgru_onednn(*args, threads=1),
        "flax": build_flax,
        "equinox": build_equinox,
        "torch": build_torch,
    }
    return builders[peer](mode, size, weights, x, y)


# ----------------------------------------------------------------------------- one process
def measure(peer: str, mode: str, sizes: list[str]) -> dict:
    """Run in a fresh process: for each size, first calls and the median of ``reps`` calls."""
    out = {}
    for size in sizes:
        weights, x, y = workload(mode, size)
        train, infer = build(peer, mode, size, weights, x, y)
        prediction = infer()  # before any update: the outputs every peer must agree on
        t0 = time.perf_counter()
        loss0 = train()
        first_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        infer()
        first_infer = time.perf_counter() - t0
        train(), infer()  # one more of each, so allocators and caches settle
        out[size] = {
            "train_ms": 1e3 * _median_time(train, REPS[size]),
            "infer_ms": 1e3 * _median_time(infer, REPS[size]),
            "first_train_s": first_train,
            "first_infer_s": first_infer,
            "prediction": prediction.reshape(-1).tolist(),
            "loss0": loss0,
        }
    return out


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # every peer's call returns host values, so the work is done
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_worker(peer: str, mode: str, sizes: list[str]) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    env["KERAS_BACKEND"] = "jax" if peer == "keras_jax" else "tensorflow"
    cmd = [sys.executable, __file__, "--worker", peer, "--mode", mode, "--sizes", ",".join(sizes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{peer} ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the report
def collect(rounds: int, sizes: list[str], modes: list[str], log=print) -> dict:
    """``results[mode][size][peer][metric]`` -> a list, one value per round."""
    results: dict = {}
    jobs = [(mode, peer) for mode in modes for peer in MODES[mode]]
    for r in range(rounds):
        shift = r % len(jobs)
        for mode, peer in jobs[shift:] + jobs[:shift]:
            t0 = time.perf_counter()
            out = run_worker(peer, mode, sizes)
            log(f"round {r + 1}/{rounds} {mode:18s} {peer:13s} {time.perf_counter() - t0:6.1f} s")
            for size, metrics in out.items():
                slot = results.setdefault(mode, {}).setdefault(size, {}).setdefault(peer, {})
                for name, value in metrics.items():
                    slot.setdefault(name, []).append(value)
    return results


def disagreements(results: dict) -> list[str]:
    """Each peer's outputs and first loss against jaxgru's, per mode and size."""
    problems = []
    for mode, by_size in results.items():
        for size, by_peer in by_size.items():
            ref = by_peer["jaxgru"]
            for peer, m in by_peer.items():
                for key in ("prediction", "loss0"):
                    got, want = np.asarray(m[key][0]), np.asarray(ref[key][0])
                    err = float(np.max(np.abs(got - want)))
                    if not err <= AGREE_ATOL * max(1.0, float(np.max(np.abs(want)))):
                        problems.append(f"{mode} {size} {peer}: {key} differs by {err:.2e}")
    return problems


def _cell(values: list[float], fmt: str) -> str:
    med = float(np.median(values))
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def _ratio(results_size: dict, peer: str, metric: str) -> str:
    others = [
        np.median(m[metric])
        for p, m in results_size.items()
        if p != peer and not (p in OWN and peer in OWN)
    ]
    return f"{np.median(results_size[peer][metric]) / min(others):.2f}×" if others else "–"


def table(results: dict, mode: str) -> list[str]:
    sizes = list(results[mode])
    head = "| peer | size | train ms | ratio | infer ms | ratio | first train call s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for size in sizes:
        for peer, m in results[mode][size].items():
            res = results[mode][size]
            lines.append(
                f"| {LABELS[peer]} | {size} | {_cell(m['train_ms'], '.2f')} | "
                f"{_ratio(res, peer, 'train_ms')} | {_cell(m['infer_ms'], '.2f')} | "
                f"{_ratio(res, peer, 'infer_ms')} | {_cell(m['first_train_s'], '.2f')} |"
            )
    return lines


def targets(results: dict) -> list[str]:
    """The issue's targets, each with its measured ratio and met / not met."""
    lines = []

    def check(what, ratio, bound):
        verdict = "met" if ratio <= bound else "**not met**"
        lines.append(f"- {what}: {ratio:.2f}× (target ≤ {bound}×): {verdict}")

    def ratio(mode, size, metric, against):
        res = results[mode][size]
        best = min(np.median(res[p][metric]) for p in against)
        return float(np.median(res["jaxgru"][metric]) / best)

    base = results.get("base", {})
    for size in base:
        others = [p for p in base[size] if p not in OWN]
        check(
            f"train step at {size}, against the fastest peer",
            ratio("base", size, "train_ms", others),
            0.7,
        )
        check(
            f"inference at {size}, against the fastest peer",
            ratio("base", size, "infer_ms", others),
            0.85,
        )
        if "flax" in base[size]:
            check(
                f"first train call at {size}, against Flax",
                ratio("base", size, "first_train_s", ["flax"]),
                1.0,
            )
    for mode in (m for m in results if m != "base"):
        for size in results[mode]:
            check(
                f"{mode} train step at {size}, against the fastest Keras backend",
                ratio(mode, size, "train_ms", KERAS),
                0.7,
            )
    return lines


def onednn_decision(results: dict) -> list[str]:
    """The oneDNN kernel's decision rule: its train step (the faster of its thread settings)
    against the XLA path's, per size."""
    factor, sizes = ONEDNN_RULE
    lines, met = [], True
    for mode, by_size in results.items():
        for size, by_peer in by_size.items():
            native = [p for p in ONEDNN_PEERS if p in by_peer]
            if "jaxgru" not in by_peer or not native:
                continue
            xla = np.median(by_peer["jaxgru"]["train_ms"])
            speedups = {p: xla / np.median(by_peer[p]["train_ms"]) for p in native}
            ruled = mode == "base" and size in sizes
            met = met and (max(speedups.values()) >= factor or not ruled)
            for p in native:
                ms = np.median(by_peer[p]["train_ms"])
                infer = np.median(by_peer["jaxgru"]["infer_ms"]) / np.median(
                    by_peer[p]["infer_ms"]
                )
                lines.append(
                    f"- {mode} at {size}: XLA {xla:.2f} ms, {LABELS[p]} {ms:.2f} ms per train "
                    f"step: {speedups[p]:.2f}× as fast (inference {infer:.2f}×)"
                    + (f"; the rule needs ≥ {factor}×" if ruled else "")
                )
    if not lines:
        return []
    verdict = (
        "**met**: the oneDNN kernel should be the CPU default"
        if met
        else '**not met**: the oneDNN kernel stays opt-in (`ExecutionOptions(kernel="onednn")`)'
    )
    rule = f"at least {factor}× the XLA path's train step speed at {' and '.join(sizes)}"
    return [f"Rule: {rule}. Verdict: {verdict}.", "", *lines]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def versions() -> str:
    found = []
    for name in VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def report(results: dict, command: str, rounds: int) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `experiments/benchmark.py`; do not edit by hand. Reproduce with:",
        "",
        f"    {command}",
        "",
        f"Machine: {machine()}.",
        f"Versions: {versions()}.",
        "",
        "A many-to-one GRU, then Dense(1), MSE, Adam(1e-3), float32, on the CPU. Sizes are",
        "(batch, time, features, units): "
        + ", ".join(f"{k} = {v}" for k, v in SIZES.items() if k != "smoke")
        + ".",
        f"Each (peer, mode) ran in a fresh process per round; {rounds} rounds, interleaved.",
        "Times are the median over rounds of each round's median (min–max of the round",
        "medians in brackets). A ratio divides by the fastest *other* peer in the same table",
        "and size. The first train call includes tracing and compilation.",
        "",
        "## Targets",
        "",
        *targets(results),
    ]
    decision = onednn_decision(results)
    if decision:
        lines += ["", "## The oneDNN kernel against the XLA path", "", *decision]
    lines += [
        "",
        "## How jaxgru's defaults were chosen",
        "",
        "`python experiments/benchmark.py --tune all` times jaxgru alone for each value of its",
        "performance knobs, rounds interleaved in one process, and writes",
        "`docs/results/tuning.md`: the scan's unroll factor (`unroll=False` means 1 for training",
        "and 4 for inference), the backward pass's chunk length (16 steps) and whether",
        "`Bidirectional` runs both directions in one loop (only up to 32 units).",
        "",
        "## GPU",
        "",
        "No GPU table: no GPU was lent to the issue that built this harness. The harness runs",
        "unchanged on a GPU machine with CUDA builds of the peers installed.",
    ]
    titles = {
        "base": "GRU(units), the default layer: every peer",
        "reset_after_false": "GRU(units, reset_after=False): Keras backends",
        "masked": "Masking(0.0) + GRU on a right-padded batch: Keras backends",
        "bidirectional": "Bidirectional(GRU(units)): Keras backends",
    }
    for mode in results:
        lines += ["", f"## {titles[mode]}", "", *table(results, mode)]
    return "\n".join(lines) + "\n"


TUNING = {  # knob -> (workload mode, the values to compare)
    "unroll": ("base", (1, 2, 4, 8)),  # ExecutionOptions.unroll; None picks unroll_train
    "chunk": ("base", (8, 16, 32, 64, None)),  # backward_chunk; None: the whole sequence
    "fused_bidirectional": ("bidirectional", (True, False)),  # fused_bidirectional_max_units
    "layout": (
        "base",
        ("per_step/per_gate", "hoisted/fused", "per_step/fused", "hoisted/per_gate"),
    ),  # input_projection / recurrent_matmul
}


def tuned_options(knob: str, value, size: str):
    """The backend's default ``ExecutionOptions`` with ``knob`` set to ``value``."""
    from jaxgru.execution import for_backend

    options = for_backend()
    if knob == "unroll":
        return options.replace(unroll=value)
    if knob == "chunk":
        return options.replace(backward_chunk=value, backward_chunk_min_bytes=0)
    if knob == "fused_bidirectional":
        return options.replace(fused_bidirectional_max_units=SIZES[size][3] if value else None)
    projection, matmul = value.split("/")
    return options.replace(input_projection=projection, recurrent_matmul=matmul)


def tune(knob: str, sizes: list[str], rounds: int = 3) -> str:
    """jaxgru's train and inference times for each value of a knob, rounds interleaved, in
    one process; ``jaxgru.execution``'s per-backend defaults come from these tables."""
    mode, values = TUNING[knob]
    rows = [f"| size | {knob} | train ms | infer ms |", "|---|---|---|---|"]
    for size in sizes:
        weights, x, y = workload(mode, size)
        built = {}
        for value in values:
            options = tuned_options(knob, value, size)
            built[value] = build_jaxgru(mode, size, weights, x, y, execution=options)
            built[value][0](), built[value][1]()
        times = {value: ([], []) for value in built}
        for _ in range(rounds):
            for value, (train, infer) in built.items():
                train(), infer()
                times[value][0].append(_median_time(train, REPS[size]))
                times[value][1].append(_median_time(infer, REPS[size]))
        for value, (tr, inf) in times.items():
            train_ms, infer_ms = 1e3 * np.median(tr), 1e3 * np.median(inf)
            label = "all" if value is None else value
            rows.append(f"| {size} | {label} | {train_ms:.2f} | {infer_ms:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="S,M,L")
    parser.add_argument("--mode-sizes", default="M", help="sizes for the Keras-only modes")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--json", default=str(ROOT / "docs" / "results" / "benchmark.json"))
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round, check outputs"
    )
    parser.add_argument(
        "--tune", choices=[*sorted(TUNING), "all"], help="time jaxgru per value of a knob"
    )
    parser.add_argument("--render", metavar="JSON", help="write --out from saved results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.mode, args.sizes.split(","))))
        return 0
    if args.tune:
        knobs = sorted(TUNING) if args.tune == "all" else [args.tune]
        text = "\n\n".join(tune(k, args.sizes.split(","), rounds=args.rounds) for k in knobs)
        if args.tune == "all":
            from jaxgru._files import atomic_write_text

            command = f"python experiments/benchmark.py --tune all --rounds {args.rounds}"
            header = (
                "# jaxgru's performance knobs\n\nWritten by `experiments/benchmark.py`. "
                f"Reproduce with:\n\n    {command}\n\nMachine: {machine()}.\n"
                "Train and inference times of jaxgru alone, in ms, median over rounds.\n\n"
            )
            atomic_write_text(ROOT / "docs" / "results" / "tuning.md", header + text + "\n")
        print(text)
        return 0
    if args.render:
        from jaxgru._files import atomic_write_text

        results = json.loads(Path(args.render).read_text())
        rounds = len(results["base"][next(iter(results["base"]))]["jaxgru"]["train_ms"])
        text = report(results, f"python experiments/benchmark.py --rounds {rounds}", rounds)
        atomic_write_text(args.out, text)
        print(text)
        return 0

    from jaxgru._files import atomic_write_text

    modes = args.modes.split(",")
    if args.smoke:
        results = collect(1, ["smoke"], modes)
    else:
        results = collect(args.rounds, args.sizes.split(","), ["base"])
        extra = [m for m in modes if m != "base"]
        if extra:
            results.update(collect(args.rounds, args.mode_sizes.split(","), extra))
    problems = disagreements(results)
    atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")
    if args.smoke:
        print("\n".join(problems) or f"all peers agree within {AGREE_ATOL}")
        return 1 if problems else 0
    if problems:
        print("peers disagree; no report written:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    command = "python experiments/benchmark.py " + " ".join(argv or sys.argv[1:])
    atomic_write_text(args.out, report(results, command.strip(), args.rounds))
    print(report(results, command.strip(), args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run by tests/test_distributed.py in a fresh process, whose XLA_FLAGS give it 4 CPU devices
(JAX reads the flag once, at start-up). Trains one model three ways on the same data and
prints JSON: the histories, the final params and the shardings the mesh runs used."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

import jaxgru


def main() -> None:
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    assert jax.device_count() == 4, jax.devices()
    # Masking, dropout (drawn over the global batch) and a sequence loss: everything whose
    # per-sample bookkeeping could differ between one device and a split batch.
    model = jaxgru.Sequential(
        [
            jaxgru.Masking(mask_value=0.0),
            jaxgru.GRU(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.1),
            jaxgru.GRU(5),
            jaxgru.Dense(2),
        ],
        input_shape=(7, 3),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(44, 7, 3)).astype(np.float32)
    x[::3, 5:] = 0.0  # right padding, masked
    y = rng.normal(size=(44, 2)).astype(np.float32)
    params = model.init(jax.random.key(1))
    settings = dict(epochs=3, batch_size=8, validation_split=0.2, optimizer="adam",
                    learning_rate=0.01, verbose=0)  # fmt: skip
    seen = {}

    def record_sharding(name):
        def callback(state, progress):
            sharding = state.params["gru"]["recurrent_kernel"].sharding
            seen[name] = list(sharding.spec) if hasattr(sharding, "spec") else "one device"

        return callback

    runs = {
        "single": {},
        "replicated": {"devices": -1},
        "sharded_params": {"devices": 4, "shard_params": True},
    }
    out = {}
    for name, extra in runs.items():
        final, history = jaxgru.fit(model, params, x, y, callbacks=[record_sharding(name)],
                                    **settings, **extra)  # fmt: skip
        out[name] = {
            "history": history,
            "params": jax.tree.map(lambda a: np.asarray(a).tolist(), final),
        }
    # A stateful GRU: its (batch, units) state is split by sample and carried between batches
    # and epochs (Keras 3's fit), over 40 samples: whole batches, as a carried state needs.
    stateful = jaxgru.Sequential([jaxgru.GRU(5, stateful=True), jaxgru.Dense(2)], (7, 3))
    stateful_params = stateful.init(jax.random.key(2))
    for name, extra in {"stateful_single": {}, "stateful_split": {"devices": -1}}.items():
        final, history = jaxgru.fit(stateful, stateful_params, x[:40], y[:40], epochs=2,
                                    batch_size=8, shuffle=False, verbose=0, **extra)  # fmt: skip
        out[name] = {
            "history": history,
            "params": jax.tree.map(lambda a: np.asarray(a).tolist(), final),
        }
    try:
        jaxgru.fit(model, params, x, y, devices=4, batch_size=6, epochs=1, verbose=0)
    except ValueError as error:
        out["batch_error"] = str(error)
    out["shardings"] = seen
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

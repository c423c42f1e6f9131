"""The training loop: one compile, exact padding, validation, early stopping, state, NaN guard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgru
from jaxgru.train import Batch, batches, init_train_state, make_train_step

RNG = np.random.default_rng(0)
X = RNG.normal(size=(37, 7, 3)).astype(np.float32)
Y = np.tanh(X.sum(axis=(1, 2)))[:, None].astype(np.float32)


def _model(**gru):
    return jaxgru.Sequential([jaxgru.GRU(5, **gru), jaxgru.Dense(1)], input_shape=(7, 3))


def test_train_step_compiles_once_including_the_padded_last_batch():
    model = _model(dropout=0.2)
    optimizer = jaxgru.optimizers.make_optimizer("adam", 1e-2)
    step = make_train_step(model, optimizer, "mse", metrics=["mae"])
    state = init_train_state(model, model.init(jax.random.key(0)), optimizer, batch_size=8)
    shapes = []
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(len(X))
        for batch in batches(X, Y, None, 8, order):
            state, _ = step(state, batch)
            shapes.append(batch.x.shape)
    assert shapes.count((8, 7, 3)) == 10  # 37 samples: 4 full batches and 1 padded, twice
    assert int(state.step) == 10
    assert step._cache_size() == 1


def test_padded_last_batch_equals_a_step_on_the_real_rows_alone():
    model = _model()
    params = model.init(jax.random.key(1))
    optimizer = optax.sgd(0.5)
    tail = np.arange(32, 37)  # the last 5 of 37 samples
    padded = next(batches(X, Y, None, 8, tail))
    exact = next(batches(X, Y, None, 5, tail))
    assert padded.valid.tolist() == [1.0] * 5 + [0.0] * 3
    results = []
    for batch, size in ((padded, 8), (exact, 5)):
        state = init_train_state(model, params, optimizer, size)
        state, measures = make_train_step(model, optimizer)(state, batch)
        results.append((state.params, float(measures["loss"])))
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)
    for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_validation_split_holds_out_the_last_samples_before_shuffling():
    model = _model()
    params, history = jaxgru.fit(
        model, model.init(jax.random.key(0)), X, Y, epochs=2, batch_size=8,
        validation_split=0.25, metrics=["mae"], verbose=0,
    )  # fmt: skip
    assert sorted(history) == ["batch_loss", "loss", "mae", "val_loss", "val_mae"]
    assert len(history["batch_loss"]) == 2 * 4  # 28 training samples
    held_out = jaxgru.evaluate(model, params, X[28:], Y[28:], metrics=["mae"])
    assert history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-6)
    assert history["val_mae"][-1] == pytest.approx(held_out["mae"], rel=1e-6)


def test_loss_goes_down_and_shuffle_is_seeded():
    model = _model()
    runs = [
        jaxgru.fit(model, model.init(jax.random.key(0)), X, Y, epochs=5, batch_size=8,
                   optimizer="adam", learning_rate=0.02, seed=seed, verbose=0)[1]
        for seed in (3, 3, 4)
    ]  # fmt: skip
    assert runs[0]["loss"][-1] < 0.5 * runs[0]["loss"][0]
    assert runs[0]["batch_loss"] == runs[1]["batch_loss"]
    assert runs[0]["batch_loss"] != runs[2]["batch_loss"]


def test_early_stopping_stops_and_restores_the_best_weights():
    model = _model()
    params0 = model.init(jax.random.key(0))
    common = dict(optimizer="sgd", shuffle=False, batch_size=8, verbose=0)
    # A negative learning rate climbs the loss, so the first epoch stays the best.
    stop = jaxgru.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    params, history = jaxgru.fit(
        model, params0, X, Y, learning_rate=-0.05, epochs=20, early_stopping=stop, **common
    )
    assert len(history["loss"]) == 3
    assert history["loss"][0] < history["loss"][1] < history["loss"][2]
    after_one, _ = jaxgru.fit(model, params0, X, Y, learning_rate=-0.05, epochs=1, **common)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(after_one)):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_mode_auto_maximises_accuracy():
    rule = jaxgru.EarlyStopping(monitor="val_accuracy", min_delta=0.1)
    assert rule.improved(0.5, 0.3) and not rule.improved(0.35, 0.3)
    assert jaxgru.EarlyStopping(monitor="val_loss").improved(0.2, 0.3)


def test_stateful_gru_carries_its_state_from_batch_to_batch():
    """Batch 2 continues batch 1 in time: its loss is that of the whole 14-step sequences."""
    rng = np.random.default_rng(2)
    long = rng.normal(size=(4, 14, 3)).astype(np.float32)
    y_long = rng.normal(size=(4, 1)).astype(np.float32)
    x = np.concatenate([long[:, :7], long[:, 7:]])  # samples 0-3 then their continuations
    y = np.concatenate([y_long, y_long])
    model = _model(stateful=True)
    params = model.init(jax.random.key(0))
    _, history = jaxgru.fit(model, params, x, y, optimizer="sgd", learning_rate=0.0,
                            batch_size=4, shuffle=False, epochs=2, verbose=0,
                            reset_states="epoch")  # fmt: skip
    plain = jaxgru.Sequential([jaxgru.GRU(5), jaxgru.Dense(1)], input_shape=(None, 3))
    whole = float(jnp.mean((plain.apply(params, long) - y_long) ** 2))
    first = float(jnp.mean((plain.apply(params, long[:, :7]) - y_long) ** 2))
    assert history["batch_loss"][1] == pytest.approx(whole, rel=1e-5)
    # reset_states="epoch": the third step starts from zeros again.
    assert history["batch_loss"][0] == pytest.approx(first, rel=1e-5)
    assert history["batch_loss"][2] == pytest.approx(first, rel=1e-5)
    # Keras 3's fit (the default): the second epoch runs on from where the first ended, so
    # its first step sees the 14 steps and then 7 more of the same samples.
    _, carried = jaxgru.fit(model, params, x, y, optimizer="sgd", learning_rate=0.0,
                            batch_size=4, shuffle=False, epochs=2, verbose=0)  # fmt: skip
    three = np.concatenate([long, long[:, :7]], axis=1)
    third = float(jnp.mean((plain.apply(params, three) - y_long) ** 2))
    assert carried["batch_loss"][:2] == pytest.approx(history["batch_loss"][:2], rel=1e-6)
    assert carried["batch_loss"][2] == pytest.approx(third, rel=1e-5)
    with pytest.raises(ValueError, match="pass shuffle=False"):
        jaxgru.fit(model, params, x, y, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="7 is not a multiple of batch_size=4"):
        jaxgru.fit(model, params, x[:7], y[:7], batch_size=4, shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="reset_states must be 'never' or 'epoch'"):
        jaxgru.fit(model, params, x, y, batch_size=4, shuffle=False, reset_states="batch",
                   verbose=0)  # fmt: skip


def _nan_after(steps: int) -> optax.GradientTransformation:
    """SGD whose updates turn NaN from step ``steps`` on: a deterministic divergence."""

    def update(grads, count, params=None):
        scale = jnp.where(count >= steps, jnp.nan, -0.01).astype(jnp.float32)
        return jax.tree.map(lambda g: scale * g, grads), count + 1

    return optax.GradientTransformation(lambda p: jnp.zeros([], jnp.int32), update)


def test_nan_guard_stops_with_a_clear_error_and_keeps_earlier_epochs():
    model = _model()
    seen = []
    with pytest.raises(jaxgru.TrainingDiverged, match=r"loss became nan at step 12 \(epoch 3\)"):
        jaxgru.fit(model, model.init(jax.random.key(0)), X, Y, optimizer=_nan_after(10),
                   batch_size=8, epochs=5, verbose=0,
                   callbacks=[lambda state, progress: seen.append(progress.epoch)])  # fmt: skip
    assert seen == [1, 2]  # the callbacks (checkpoints) ran for the good epochs only


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"validation_split": 1.0}, "validation_split must be in"),
        ({"loss": "hinge"}, "unknown loss"),
        ({"optimizer": "adagrad"}, "unknown optimizer"),
        ({"early_stopping": jaxgru.EarlyStopping(monitor="val_auc")}, "monitors 'val_auc'"),
        ({"class_weight": {0: 2.0}, "sample_weight": np.ones(37)}, "class_weight or sample_"),
        ({"class_weight": {"a": 2.0}}, "class_weight must map class ids to weights"),
    ],
)
def test_bad_fit_arguments(kwargs, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        jaxgru.fit(model, model.init(jax.random.key(0)), X, Y, verbose=0, **kwargs)


def test_class_weight_is_a_sample_weight_by_class_on_the_training_split_only():
    """Keras's rule: the class of ids (rounded) or of one-hot rows (argmax), weight 1 for a
    class not named; the validation split keeps weight 1. Equal to passing the weights."""
    from jaxgru.train import class_weight_to_sample_weight

    ids = np.array([0, 2, 1, 2, 3])
    weights = {0: 0.5, "2": 3.0}  # a TOML table's keys are strings
    expected = np.array([0.5, 3.0, 1.0, 3.0, 1.0], np.float32)
    np.testing.assert_array_equal(class_weight_to_sample_weight(ids, weights), expected)
    np.testing.assert_array_equal(class_weight_to_sample_weight(ids[:, None], weights), expected)
    np.testing.assert_array_equal(class_weight_to_sample_weight(np.eye(4)[ids], weights), expected)
    with pytest.raises(jaxgru.errors.DataError, match="one class per sample"):
        class_weight_to_sample_weight(np.zeros((5, 7, 1)), weights)
    model = jaxgru.Sequential([jaxgru.GRU(5), jaxgru.Dense(3)], input_shape=(7, 3))
    params = model.init(jax.random.key(0))
    labels = RNG.integers(0, 3, 37)
    settings = {"loss": "sparse_categorical_crossentropy", "from_logits": True, "epochs": 2,
                "batch_size": 8, "shuffle": False, "verbose": 0}  # fmt: skip
    by_class = jaxgru.fit(model, params, X, labels, class_weight={1: 4.0},
                          validation_split=0.2, **settings)  # fmt: skip
    train_weight = np.where(labels[:30] == 1, 4.0, 1.0)  # the split keeps the last 7 out
    by_hand = jaxgru.fit(model, params, X[:30], labels[:30], sample_weight=train_weight,
                         validation_data=(X[30:], labels[30:]), **settings)  # fmt: skip
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(by_class[1][name], by_hand[1][name], rtol=1e-6)
    unweighted = jaxgru.fit(model, params, X, labels, validation_split=0.2, **settings)
    assert abs(unweighted[1]["loss"][0] - by_class[1]["loss"][0]) > 1e-3


def test_predict_batches_and_trims_the_padding():
    model = _model()
    params = model.init(jax.random.key(0))
    out = jaxgru.predict(model, params, X, batch_size=8)
    np.testing.assert_allclose(out, model.apply(params, X), rtol=1e-6, atol=1e-7)


def test_batch_is_a_named_tuple_of_arrays():
    batch = next(batches(X, Y, np.full(37, 2.0), 8, np.arange(37)))
    assert isinstance(batch, Batch) and batch.weight.tolist() == [2.0] * 8


def test_predict_and_evaluate_compile_once_per_model_and_shape():
    """As the train step: a second call, or an equal model rebuilt, reuses the program."""
    from jaxgru import train

    def build():
        return jaxgru.Sequential([jaxgru.GRU(4), jaxgru.Dense(1)], input_shape=(6, 2))

    model = build()
    params = model.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(10, 6, 2)).astype(np.float32)
    y = np.zeros((10, 1), np.float32)
    first = jaxgru.predict(model, params, x, batch_size=4)
    again = jaxgru.predict(build(), params, x, batch_size=4)  # the last batch is padded
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, model.apply(params, x), rtol=1e-5, atol=1e-6)
    assert train._predict_step(model)._cache_size() == 1
    losses = [jaxgru.evaluate(m, params, x, y, batch_size=4, metrics=["mae"])["loss"]
              for m in (model, build())]  # fmt: skip
    assert losses[0] == losses[1]
    eval_step = train.make_eval_step(model, "mse", ["mae"], False)  # a list, as users pass
    assert eval_step._cache_size() == 1
    jaxgru.predict(model, params, x[:3], batch_size=3)  # a new batch shape: one more program
    assert train._predict_step(model)._cache_size() == 2


def _plateau_run(**fit):
    plateau = jaxgru.train.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=0.5)
    model = _model()
    settings = {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9, "batch_size": 8,
                "shuffle": False, "verbose": 0, "reduce_lr_on_plateau": plateau}  # fmt: skip
    return model, jaxgru.fit(model, model.init(jax.random.key(0)), X, Y, **{**settings, **fit})


def test_reduce_lr_on_plateau_changes_the_rate_in_the_state_and_resumes_bit_exact():
    import copy

    saved = []
    keep = lambda state, progress: saved.append((state, copy.deepcopy(progress)))  # noqa: E731
    _, (params, history) = _plateau_run(epochs=4, callbacks=[keep])
    # the first epoch sets the best; min_delta 0.5: no later one improves on it, so each lowers
    # the next rate (float32 rates, as Keras's variable logs them)
    assert history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025], rel=1e-7)
    state, progress = saved[1]  # after epoch 2
    assert jaxgru.optimizers.learning_rate_of(state.opt_state) == pytest.approx(0.05)
    _, (resumed, again) = _plateau_run(epochs=4, resume=(state, progress))
    assert again["learning_rate"] == history["learning_rate"]
    for ours, theirs in zip(jax.tree.leaves(resumed), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("fit", "match"),
    [
        ({"schedule": jaxgru.optimizers.ScheduleConfig("cosine_decay")}, "of a schedule"),
        ({"optimizer": optax.sgd(0.1), "learning_rate": None, "momentum": 0.0},
         "inject_hyperparams"),
        ({"epochs": 1, "reduce_lr_on_plateau": jaxgru.train.ReduceLROnPlateau("val_mae")},
         "monitors 'val_mae'"),
    ],
)  # fmt: skip
def test_reduce_lr_on_plateau_refuses_what_cannot_work_with_the_fix(fit, match):
    with pytest.raises(jaxgru.errors.ConfigError, match=match):
        _plateau_run(**{"epochs": 1, **fit})


def _bn_model():
    layers = [jaxgru.BatchNormalization(momentum=0.5), jaxgru.GRU(5), jaxgru.Dense(1)]
    return jaxgru.Sequential(layers, input_shape=(7, 3))


def test_moving_statistics_stay_out_of_the_optimizer_and_skip_the_padding_rows():
    model = _bn_model()
    params = model.init(jax.random.key(0))
    optimizer = jaxgru.optimizers.make_optimizer("adamw", 0.01)
    state = init_train_state(model, params, optimizer, batch_size=8)
    slots = jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
    paths = {jax.tree_util.keystr(path) for path, _ in slots}
    assert any("gamma" in p for p in paths) and not any("moving" in p for p in paths)
    step = make_train_step(model, optimizer, "mse")
    x, y = X[:5], Y[:5]
    padded = next(batches(x, y, None, 8, np.arange(5)))  # 5 real rows, 3 of padding
    exact = next(batches(x, y, None, 5, np.arange(5)))
    moved = [step(init_train_state(model, params, optimizer, b), b)[0].params for b in
             (padded, exact)]  # fmt: skip
    stats = [p["batch_normalization"] for p in moved]
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(stats[0][name], stats[1][name], rtol=1e-6)
        # the reference: momentum 0.5 between the initial value and the real rows' moments
        reduce = x.reshape(-1, 3).astype(np.float64)
        batch = reduce.mean(0) if name == "moving_mean" else reduce.var(0)
        start = np.asarray(params["batch_normalization"][name], np.float64)
        np.testing.assert_allclose(stats[0][name], 0.5 * start + 0.5 * batch, rtol=1e-5)


def test_a_run_with_moving_statistics_resumes_bit_exact():
    import copy

    model = _bn_model()
    params = model.init(jax.random.key(0))
    settings = {"optimizer": "adam", "batch_size": 8, "shuffle": True, "verbose": 0}
    saved = []
    keep = lambda state, progress: saved.append((state, copy.deepcopy(progress)))  # noqa: E731
    whole, _ = jaxgru.fit(model, params, X, Y, epochs=3, callbacks=[keep], **settings)
    resumed, _ = jaxgru.fit(model, params, X, Y, epochs=3, resume=saved[0], **settings)
    assert not np.allclose(whole["batch_normalization"]["moving_mean"],
                           params["batch_normalization"]["moving_mean"])  # fmt: skip
    for ours, theirs in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole), strict=True):
        np.testing.assert_array_equal(ours, theirs)

"""Real Keras 3 models for the Keras I/O tests, with random non-zero weights everywhere."""

from __future__ import annotations

import numpy as np


def build(name: str):
    """A Keras 3 model by name, and an input batch for it. Weights are random, biases non-zero."""
    import keras

    L = keras.layers
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    if name == "stacked_grus":
        model = keras.Sequential([
            keras.Input((None, 3)),
            L.GRU(6, return_sequences=True, go_backwards=True, activation="softsign"),
            L.GRU(5, return_sequences=True, reset_after=False,
                  recurrent_activation="hard_sigmoid"),
            L.GRU(4, use_bias=False, activation="relu"),
            L.Dense(2),
        ])  # fmt: skip
    elif name.startswith("bidirectional_"):
        mode, sequences = name.split("_")[1], name.endswith("_seq")
        merge_mode = None if mode == "none" else mode
        layers = [keras.Input((None, 3)), L.Masking()]
        layers.append(L.Bidirectional(L.GRU(4, return_sequences=sequences), merge_mode=merge_mode))
        if merge_mode is not None:
            layers.append(L.Dense(2))
        model = keras.Sequential(layers)
        x[0, 5:] = 0.0  # padded steps
    elif name == "embedding_mask_zero":
        model = keras.Sequential([
            keras.Input((None,), dtype="int32"),
            L.Embedding(11, 3, mask_zero=True),
            L.GRU(5, return_sequences=True),
            L.GRU(4),
            L.Dense(2),
        ])  # fmt: skip
        x = rng.integers(1, 11, size=(3, 7)).astype(np.int32)
        x[0, 4:] = 0
        x[1, 6:] = 0
    elif name == "masking_padded":
        model = keras.Sequential([
            keras.Input((None, 3)),
            L.Masking(mask_value=0.0),
            L.GRU(5, return_sequences=True),
            L.GRU(4, go_backwards=True),
        ])  # fmt: skip
        x[0, 4:] = 0.0
        x[1, :2] = 0.0
    elif name == "dropout_at_inference":
        model = keras.Sequential([
            keras.Input((None, 3)),
            L.GRU(5, dropout=0.3, recurrent_dropout=0.2, return_sequences=True),
            L.Dropout(0.5),
            L.GRU(4),
            L.Dense(2),
        ])  # fmt: skip
    elif name == "custom_backward_bidirectional":
        # The Bidirectional example of the Keras API docs
        # (keras.io/api/layers/recurrent_layers/bidirectional/), with GRUs: a backward layer
        # of its own (here also reset_after=False), after a Masking layer. (Keras sizes the
        # merged output from the forward layer, so both need the same units.)
        backward = L.GRU(4, activation="relu", reset_after=False, return_sequences=True,
                         go_backwards=True)  # fmt: skip
        model = keras.Sequential([
            keras.Input((None, 3)),
            L.Masking(),
            L.Bidirectional(L.GRU(4, return_sequences=True), backward_layer=backward),
            L.GRU(2),
        ])  # fmt: skip
        x[1, 5:] = 0.0  # padded steps
    elif name == "rnn_gru_cells":
        # RNN(GRUCell(...)), the cell-level API (keras.io/api/layers/recurrent_layers/rnn/),
        # with the cell's own options and the RNN's sequence options, after a Masking layer.
        model = keras.Sequential([
            keras.Input((None, 3)),
            L.Masking(),
            L.RNN(L.GRUCell(4, reset_after=False, activation="relu"), return_sequences=True,
                  go_backwards=True),
            L.RNN(L.GRUCell(3)),
            L.Dense(2),
        ])  # fmt: skip
        x[0, 5:] = 0.0
    elif name == "activation_layers":
        # Keras's activation layers between GRUs, masks passing through them.
        model = keras.Sequential([
            keras.Input((None, 3)),
            L.Masking(),
            L.GRU(5, return_sequences=True),
            L.ReLU(max_value=0.5, negative_slope=0.1, threshold=0.05),
            L.LeakyReLU(negative_slope=0.2),
            L.ELU(alpha=0.7),
            L.Activation("softsign"),
            L.GRU(4),
            L.Dense(3),
            L.Softmax(),
        ])  # fmt: skip
        x[1, 4:] = 0.0
    elif name == "gru_dense_softmax":
        model = keras.Sequential([keras.Input((7, 3)), L.GRU(5), L.Dense(4, activation="softmax")])
    elif name == "functional_chain":
        inputs = keras.Input((None, 3))
        h = L.GRU(5, return_sequences=True, name="encoder")(inputs)
        h = L.GRU(4, name="summary")(h)
        model = keras.Model(inputs, L.Dense(2, activation="tanh", name="head")(h))
    else:
        raise KeyError(name)
    model.set_weights(
        [rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model, x


NAMES = [
    "stacked_grus",
    *[f"bidirectional_{m}{s}" for m in ("concat", "sum", "mul", "ave") for s in ("", "_seq")],
    "bidirectional_none_seq",
    "custom_backward_bidirectional",
    "rnn_gru_cells",
    "activation_layers",
    "embedding_mask_zero",
    "masking_padded",
    "dropout_at_inference",
    "gru_dense_softmax",
    "functional_chain",
]

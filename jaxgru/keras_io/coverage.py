"""Which Keras layer classes jaxgru reads, and why the others are refused.

``REFUSED`` holds the reason for each Keras class jaxgru refuses on purpose (an LSTM, a
``Lambda``'s Python code); any other class outside the registry is "not supported yet". The
loader's refusal messages and ``docs/keras-coverage.md`` (written by
``experiments/keras_coverage_doc.py``, checked by a test) both read this table, so they say
the same thing.
"""

from __future__ import annotations

from jaxgru import layer

NOT_YET = "not supported yet"
_LSTM = "jaxgru implements GRUs, not LSTMs"
_PREPROCESSING = (
    "a preprocessing layer: apply it to the data before the model (its state is a vocabulary "
    "or statistics, not trained weights)"
)

# keras.layers' preprocessing classes (Keras 3.15), refused for _PREPROCESSING.
PREPROCESSING = tuple(
    [
        "AugMix",
        "AutoContrast",
        "CategoryEncoding",
        "CenterCrop",
        "ContrastLimitedAdaptiveHistogramEqualization",
        "CutMix",
        "Discretization",
        "Equalization",
        "HashedCrossing",
        "Hashing",
        "IntegerLookup",
        "MaxNumBoundingBoxes",
        "MelSpectrogram",
        "MixUp",
        "Normalization",
        "Pipeline",
        "RandAugment",
        "RandomBrightness",
        "RandomColorDegeneration",
        "RandomColorJitter",
        "RandomContrast",
        "RandomCrop",
        "RandomElasticTransform",
        "RandomErasing",
        "RandomFlip",
        "RandomGaussianBlur",
        "RandomGrayscale",
        "RandomHue",
        "RandomInvert",
        "RandomPerspective",
        "RandomPosterization",
        "RandomRotation",
        "RandomSaturation",
        "RandomSharpness",
        "RandomShear",
        "RandomTranslation",
        "RandomZoom",
        "Rescaling",
        "Resizing",
        "STFTSpectrogram",
        "Solarization",
        "StringLookup",
        "TextVectorization",
    ]
)

REFUSED: dict[str, str] = {
    **dict.fromkeys(PREPROCESSING, _PREPROCESSING),
    "LSTM": _LSTM,
    "LSTMCell": _LSTM,
    "CuDNNLSTM": _LSTM,
    "ConvLSTM1D": _LSTM,
    "ConvLSTM2D": _LSTM,
    "ConvLSTM3D": _LSTM,
    "Lambda": "its Python code cannot be read from a file safely; rewrite it as a layer "
    "class and register it with jaxgru.register_layer",
    "TFSMLayer": "it runs a TensorFlow SavedModel, which needs TensorFlow; export the model "
    "to .keras and load that",
    "JaxLayer": "it wraps a Python function; port it as a jaxgru layer (jaxgru.register_layer)",
    "FlaxLayer": "it wraps a Python Flax module; port it as a jaxgru layer "
    "(jaxgru.register_layer)",
    "TorchModuleWrapper": "it wraps a PyTorch module, which a Keras file cannot rebuild "
    "without PyTorch",
}


def refusal_reason(class_name: str) -> str:
    """Why jaxgru does not read Keras's ``class_name``."""
    return REFUSED.get(class_name, NOT_YET)


def supported(class_name: str) -> str | None:
    """The jaxgru class that reads Keras's ``class_name``, or ``None``."""
    cls = layer.layer_class(class_name)
    return None if cls is None else f"{cls.__module__}.{cls.__qualname__}"

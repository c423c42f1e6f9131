"""jaxgru: a functional JAX GRU whose parameters are laid out and named exactly as Keras's.

>>> import jax, jax.numpy as jnp, jaxgru
>>> layer = jaxgru.GRU(4)
>>> params = layer.init(jax.random.key(0), input_dim=3)
>>> layer.apply(params, jnp.zeros((2, 7, 3))).shape
(2, 4)
"""

from jaxgru import (
    activations,
    constraints,
    convert,
    distributed,
    errors,
    execution,
    explain,
    initializers,
    layer,
    losses,
    optimizers,
    regularizers,
)
from jaxgru._version import __version__
from jaxgru.activation_layers import ELU, Activation, LeakyReLU, PReLU, ReLU, Softmax
from jaxgru.attention import AdditiveAttention, Attention, MultiHeadAttention
from jaxgru.convolution import Conv1D, Conv2D, SeparableConv1D
from jaxgru.errors import JaxgruError
from jaxgru.execution import ExecutionOptions
from jaxgru.graph import Input, Model
from jaxgru.gru import GRU, GateValues, ScanResult
from jaxgru.keras_io import (
    KerasFileError,
    cudnn_gru_to_gru,
    from_keras_weights,
    load_keras,
    load_keras_weights,
    save_keras,
    save_keras_weights,
    to_keras_weights,
)
from jaxgru.layer import Layer, register_layer
from jaxgru.layers import ActivityRegularization, Bidirectional, Dense, Dropout, Embedding, Masking
from jaxgru.merging import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from jaxgru.model import Sequential
from jaxgru.noise import AlphaDropout, GaussianDropout, GaussianNoise, SpatialDropout1D
from jaxgru.normalization import BatchNormalization, LayerNormalization
from jaxgru.pooling import (
    AveragePooling1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    MaxPooling1D,
)
from jaxgru.reshaping import Cropping1D, Flatten, Permute, RepeatVector, Reshape, ZeroPadding1D
from jaxgru.rnn import RNN, StackedGRUCells
from jaxgru.simple_rnn import SimpleRNN
from jaxgru.time_distributed import TimeDistributed
from jaxgru.train import (
    EarlyStopping,
    PreparedFit,
    ReduceLROnPlateau,
    TrainingDiverged,
    evaluate,
    fit,
    predict,
    prepare_fit,
)

__all__ = [
    "ELU",
    "GRU",
    "RNN",
    "Activation",
    "ActivityRegularization",
    "Add",
    "AdditiveAttention",
    "AlphaDropout",
    "Attention",
    "Average",
    "AveragePooling1D",
    "BatchNormalization",
    "Bidirectional",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Cropping1D",
    "Dense",
    "Dot",
    "Dropout",
    "EarlyStopping",
    "Embedding",
    "ExecutionOptions",
    "Flatten",
    "GateValues",
    "GaussianDropout",
    "GaussianNoise",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "Input",
    "JaxgruError",
    "KerasFileError",
    "Layer",
    "LayerNormalization",
    "LeakyReLU",
    "Masking",
    "MaxPooling1D",
    "Maximum",
    "Minimum",
    "Model",
    "MultiHeadAttention",
    "Multiply",
    "PReLU",
    "Permute",
    "PreparedFit",
    "ReLU",
    "ReduceLROnPlateau",
    "RepeatVector",
    "Reshape",
    "ScanResult",
    "SeparableConv1D",
    "Sequential",
    "SimpleRNN",
    "Softmax",
    "SpatialDropout1D",
    "StackedGRUCells",
    "Subtract",
    "TimeDistributed",
    "TrainingDiverged",
    "ZeroPadding1D",
    "__version__",
    "activations",
    "constraints",
    "convert",
    "cudnn_gru_to_gru",
    "distributed",
    "errors",
    "evaluate",
    "execution",
    "explain",
    "fit",
    "from_keras_weights",
    "initializers",
    "layer",
    "load_keras",
    "load_keras_weights",
    "losses",
    "optimizers",
    "predict",
    "prepare_fit",
    "register_layer",
    "regularizers",
    "save_keras",
    "save_keras_weights",
    "to_keras_weights",
]

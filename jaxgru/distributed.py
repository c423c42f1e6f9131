"""Many devices and many hosts, on JAX's own engine: ``jax.sharding`` and ``jax.distributed``.

Data parallelism: a one-axis ``Mesh`` named ``data`` over the chosen devices. Each global batch
is split along its first axis, one slice per device; the params and the optimizer state are
replicated (or, with ``shard_params``, split along one axis each, which XLA gathers when a step
needs them). ``jax.jit`` then inserts the gradient all-reduce itself: one program, no
hand-written collectives. The same code runs on one host with many devices and on many hosts,
where every process holds the whole dataset and contributes the slices of its own devices.

>>> import jax, numpy as np
>>> dp = DataParallel(make_mesh(1))
>>> dp.size, tuple(dp.place_batch(np.ones((4, 2), np.float32)).sharding.spec)
(1, ('data',))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxgru.errors import ConfigError

DATA_AXIS = "data"

# The explicit launch (README, "Many hosts"): every process gets the same coordinator address
# and process count, and its own id.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize_from_env(environ: dict | None = None) -> bool:
    """Join a multi-process run when the environment describes one; returns whether it did.

    Two cases start ``jax.distributed``: the three variables ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; or a cluster
    JAX detects by itself, SLURM (``SLURM_NTASKS`` > 1) or Open MPI (``OMPI_COMM_WORLD_SIZE``
    > 1). Otherwise this is a single-process run and nothing happens.
    """
    env = os.environ if environ is None else environ
    if jax.distributed.is_initialized():
        return True
    explicit = [env.get(k) for k in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)]
    if any(explicit):
        if not all(explicit):
            raise ConfigError(
                f"a multi-process launch needs all of {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} "
                f"and {ENV_PROCESS_ID}; got {ENV_COORDINATOR}={explicit[0]!r}, "
                f"{ENV_NUM_PROCESSES}={explicit[1]!r}, {ENV_PROCESS_ID}={explicit[2]!r}"
            )
        try:
            count, index = int(explicit[1]), int(explicit[2])
        except ValueError:
            raise ConfigError(
                f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be integers; got "
                f"{explicit[1]!r} and {explicit[2]!r}"
            ) from None
        jax.distributed.initialize(explicit[0], count, index)
        return True
    cluster_sizes = (env.get("SLURM_NTASKS"), env.get("OMPI_COMM_WORLD_SIZE"))
    if any(size and size.isdigit() and int(size) > 1 for size in cluster_sizes):
        jax.distributed.initialize()
        return True
    return False


def is_primary() -> bool:
    """Whether this is process 0, the one that writes checkpoints, logs and outputs."""
    return jax.process_index() == 0


def make_mesh(devices: int | Sequence | Mesh | None = -1) -> Mesh:
    """A one-axis ``data`` mesh.

    Args:
        devices: ``-1`` (or ``None``) for every device of every process, ``n`` for the first
            ``n`` of ``jax.devices()``, a list of devices, or a ``Mesh`` (returned as is; it
            must have a ``data`` axis).
    """
    if isinstance(devices, Mesh):
        if DATA_AXIS not in devices.axis_names:
            raise ConfigError(f"the mesh needs an axis named {DATA_AXIS!r}: {devices.axis_names}")
        return devices
    available = jax.devices()
    if devices is None or (isinstance(devices, int) and devices == -1):
        chosen = available
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ConfigError(
                f"asked for {devices} devices, but JAX sees {len(available)} "
                f"({available[0].platform}); use -1 for all of them. On CPU, "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices"
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ConfigError("devices is an empty list")
    return Mesh(np.array(chosen), (DATA_AXIS,))


@dataclass(frozen=True)
class DataParallel:
    """Where a training run's arrays live on ``mesh``: batches split along ``data``, params
    and optimizer state replicated, or split too with ``shard_params``."""

    mesh: Mesh
    shard_params: bool = False

    @property
    def size(self) -> int:
        """The number of devices along ``data``: a global batch must be a multiple of it."""
        return self.mesh.shape[DATA_AXIS]

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def split(self) -> NamedSharding:
        """The first axis split over ``data``: batches and per-sample states."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise ConfigError(
                f"batch_size {batch_size} does not split evenly over {self.size} devices; "
                f"use a multiple of {self.size}, or fewer devices"
            )

    def param_sharding(self, leaf) -> NamedSharding:
        """Replicated; with ``shard_params``, split along the leaf's largest axis that
        ``size`` divides (small or indivisible leaves stay replicated)."""
        shape = np.shape(leaf)
        if not self.shard_params or not shape:
            return self.replicated
        axes = [a for a in np.argsort(shape)[::-1] if shape[a] % self.size == 0]
        if not axes:
            return self.replicated
        spec = [None] * len(shape)
        spec[axes[0]] = DATA_AXIS
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def state_shardings(self, state):
        """The shardings of a ``TrainState``: params and optimizer state as ``param_sharding``
        says, step and rng replicated, the carried stateful-GRU states split by sample."""
        return state._replace(
            params=jax.tree.map(self.param_sharding, state.params),
            opt_state=jax.tree.map(self.param_sharding, state.opt_state),
            step=self.replicated,
            rng=self.replicated,
            states=jax.tree.map(lambda _: self.split, state.states),
        )

    def place(self, tree, shardings):
        """Host (or single-device) arrays -> global arrays with ``shardings``. Every process
        passes the same global values and keeps only the slices of its own devices."""
        return jax.tree.map(_global_array, tree, shardings)

    def place_batch(self, tree):
        """A global batch (arrays with the sample axis first) split over ``data``."""
        return jax.tree.map(lambda a: _global_array(a, self.split), tree)


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree):
    """NumPy copies of a pytree of arrays, whatever their sharding. An array split over
    other processes' devices is gathered, so every process must call this together."""
    if all(
        not isinstance(leaf, jax.Array) or leaf.is_fully_addressable or leaf.is_fully_replicated
        for leaf in jax.tree.leaves(tree)
    ):
        return jax.tree.map(np.asarray, jax.device_get(tree))
    return multihost_utils.process_allgather(tree, tiled=True)


def same_on_every_process(value: int, problem: str) -> None:
    """Raise ``ValueError(problem)`` unless every process passes the same ``value``
    (a no-op in a single-process run)."""
    if jax.process_count() == 1:
        return
    values = multihost_utils.process_allgather(np.asarray(value))
    if len(set(np.asarray(values).ravel().tolist())) > 1:
        raise ConfigError(f"{problem} (found: {np.asarray(values).ravel().tolist()})")

"""Parallelism: a 2-D mesh of every device of every process, with a `data` axis that splits
the batch and a `model` axis that splits the parameters the parts declare shardable.

`Config.mesh_shape = (data, model)`; `(devices, 1)` by default (pure data parallelism). The
batch is sharded over `data` (each process loads only the slices its devices hold), and a
parameter leaf that a part shards (`Part.partition_leaf`, e.g. TensoRF's planes along their
widest axis) is split over `model`; every other leaf is replicated. The optimiser moments of
a parameter follow its sharding, so a grid larger than one device's memory trains on many.
"""

import math

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxnerf360.errors import UserError

DATA_AXIS = "data"
MODEL_AXIS = "model"


def make_mesh(shape=None, fallback: bool = False) -> Mesh:
    """A (data, model) mesh over all devices of all processes; `shape` None is all-data.

    With `fallback` (rendering a run trained elsewhere), a shape made for another device
    count gives the all-data mesh, with a log line, instead of an error.
    """
    n = jax.device_count()
    sizes = (n, 1) if shape is None else _sizes(shape)
    if fallback and (len(sizes) != 2 or math.prod(sizes) != n):
        logging.info("Config.mesh_shape=%s does not fit these %d devices; using (%d, 1)",
                     shape, n, n)
        sizes = (n, 1)
    if len(sizes) != 2 or min(sizes) < 1 or math.prod(sizes) != n:
        raise UserError(f"Config.mesh_shape={sizes or None} must be two positive sizes (data, "
                        f"model) whose product is the {n} devices, e.g. ({n}, 1)")
    return jax.make_mesh(sizes, (DATA_AXIS, MODEL_AXIS), (AxisType.Auto, AxisType.Auto),
                         devices=jax.devices())


def _sizes(shape) -> tuple:
    """`shape` as a tuple of ints; () when it is not a sequence of integers."""
    try:
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        return ()


def data_size(mesh: Mesh) -> int:
    """The number of slices a batch is split into (the data axis's size)."""
    return int(mesh.shape[DATA_AXIS])


def model_size(mesh: Mesh) -> int:
    """The number of slices a sharded parameter is split into (the model axis's size)."""
    return int(mesh.shape[MODEL_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (ray) axis over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def process_data_slice(mesh: Mesh, process: int | None = None) -> tuple:
    """(index, count): this process loads slice `index` of `count` equal slices of a batch.

    The rows of the data axis that the process's devices lie on must form one block, as
    large as every other process's; processes on the same rows (a model axis across
    processes) load the same slice.
    """
    process = jax.process_index() if process is None else process
    rows = {}
    for (row, _), device in np.ndenumerate(mesh.devices):
        rows.setdefault(device.process_index, set()).add(row)
    mine = sorted(rows[process])
    size = len(mine)
    blocks = {tuple(sorted(r)) for r in rows.values()}
    contiguous = all(len(b) == size and b[-1] - b[0] == size - 1 and b[0] % size == 0
                     for b in blocks)
    if not contiguous:
        raise UserError(f"Config.mesh_shape={tuple(mesh.devices.shape)} puts a process's "
                        "devices on scattered rows of the data axis; use a model axis that "
                        "divides each process's devices, or spans whole processes")
    return mine[0] // size, data_size(mesh) // size


def local_mesh() -> Mesh:
    """A mesh of this process's own devices, all data: for work each process does alone
    (its share of the test views or frames)."""
    return Mesh(np.asarray(jax.local_devices()).reshape(-1, 1), (DATA_AXIS, MODEL_AXIS))


def share(count: int) -> list:
    """The indices of `count` items (views, frames) this process takes: every P-th."""
    return list(range(jax.process_index(), count, jax.process_count()))


def gather(values: np.ndarray) -> np.ndarray:
    """`[P, ...]`: every process's `values` (of one shape on all), on every process."""
    if jax.process_count() == 1:
        return np.asarray(values)[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values)))


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier `name` (nothing with one process)."""
    if jax.process_count() > 1:
        import orbax.checkpoint as ocp

        ocp.multihost.sync_global_processes(name)


def to_global(tree, mesh: Mesh):
    """Assembles each process's local slice of a batch into globally sharded arrays."""
    sharding = data_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        tree)


def replicate(tree, mesh: Mesh):
    """Places a host pytree on every device."""
    return jax.device_put(tree, replicated(mesh))


def state_shardings(state, mesh: Mesh, parts: dict):
    """The sharding of every leaf of a train state: what its owner part declares for it
    (`Part.partition_leaf`), found by the part's key in the leaf's path, so that optimiser
    moments follow their parameters; replicated for everything else."""
    size = model_size(mesh)

    def sharding(path, leaf):
        keys = [getattr(k, "key", None) for k in path]
        owner = next((k for k in keys if isinstance(k, str) and k in parts), None)
        if owner is None or size == 1 or not hasattr(leaf, "shape"):
            return replicated(mesh)
        inner = tuple(keys[keys.index(owner) + 1:])
        spec = parts[owner].partition_leaf(inner, tuple(leaf.shape), size)
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree_util.tree_map_with_path(sharding, state)


def place(tree, shardings):
    """`tree` on the devices as `shardings` (a matching tree) says."""
    return jax.device_put(tree, shardings)


def widest_axis_spec(shape: tuple, axes: tuple, size: int) -> tuple:
    """A PartitionSpec (as a tuple) that splits the widest of `axes` of `shape` evenly over
    the model axis of `size`; () (replicated) when none divides."""
    fits = [a for a in axes if shape[a] % size == 0 and shape[a] >= size]
    if not fits:
        return ()
    widest = max(fits, key=lambda a: shape[a])
    return tuple(MODEL_AXIS if a == widest else None for a in range(len(shape)))

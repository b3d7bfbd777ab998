"""Data parallelism: one mesh axis over every device of every process."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices (all hosts) along the data axis."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (ray) axis over the devices."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def to_global(tree, mesh: Mesh):
    """Assembles each process's local slice of a batch into globally sharded arrays."""
    sharding = data_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        tree)


def replicate(tree, mesh: Mesh):
    """Places a host pytree on every device."""
    return jax.device_put(tree, replicated(mesh))

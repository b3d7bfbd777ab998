"""What every radiance field offers the rest of the pipeline, declared rather than guessed.

A field is a Flax module called as `field(means, covs, viewdirs, progress=None)` with
Gaussians in field space (the sampler has already contracted or warped them): `means
[..., n, 3]`, `covs [..., n, 3, 3]` (or None for point samples), unit `viewdirs [..., 3]` (or
None for density only). It returns a dict with `density [..., n]` (non-negative) and any named
channels `[..., n, C]` (`rgb` in [0, 1], later `features` or `latent`); the model composites
every channel. `progress` ({'train_frac', 'spectral', 'rng'} during training, else None)
drives training-time schedules. A field that declares `separable_appearance` also takes
`with_density=False`, returning its channels without density, so that the model can compute
them only where they show.

Besides, a field declares, through the methods of `Field` below, what the other stages need
to know about it: how its parameters group for the optimiser, the loss terms it regularises
itself with, its grid resolution and how to resize it, and when its spectral schedules end.
Other modules ask these methods; they never look at a field's parameter names.
"""

import flax.linen as nn

from jaxnerf360.parts import Part


class Field(Part):
    """Base of every field: the declarations below have the defaults of a plain network."""

    _DECLARATIONS = Part._DECLARATIONS + (
        "channels", "regularizers", "grid_resolution", "resolution_schedule", "resolution_at",
        "resize_leaf", "spectral_end", "file_tensors", "file_settings", "params_from_file",
        "file_bindings")
    # Whether gradients reach the sample positions, so that camera poses can be learned.
    supports_pose_optimization = False
    # Whether `with_density=False` computes the channels alone (for TensoRF's weight culling).
    separable_appearance = False

    @nn.nowrap
    def channels(self) -> dict:
        """{name: width} of the channels it returns besides density (what a head may read)."""
        return {"rgb": 3}

    @nn.nowrap
    def regularizers(self) -> list:
        """`objective.LossTerm`s on this field's parameters (`inputs.field_params`)."""
        return []

    @nn.nowrap
    def grid_resolution(self, params=None) -> tuple | None:
        """Grid points (x, y, z) of a grid field, read off `params` when given; None if no grid."""
        return None

    @nn.nowrap
    def resolution_schedule(self) -> list:
        """[(step, (nx, ny, nz))] at which the grid grows (empty for fields without one)."""
        return []

    @nn.nowrap
    def resolution_at(self, step: int) -> tuple | None:
        """The grid resolution after `step` training steps (None for fields without a grid)."""
        res = self.grid_resolution()
        for at, r in self.resolution_schedule():
            if step >= at:
                res = r
        return res

    @nn.nowrap
    def resize_leaf(self, path: tuple, value, resolution, moment: bool = False):
        """A leaf at `path` (keys inside this field's params) resized to grid `resolution`.

        With `moment` the leaf is an optimiser moment of that parameter. Leaves that do not
        depend on the resolution come back unchanged.
        """
        return value

    @nn.nowrap
    def spectral_end(self) -> float:
        """The fraction of training from which its spectral-control schedules stay 0 (0: none,
        inf: never)."""
        return 0.0

    @nn.nowrap
    def file_tensors(self, params, network_dtype: str) -> dict | None:
        """{name: array or codec record} a compressed scene file stores for this field's
        `params` (flat names), or None when the field has no compressed form."""
        return None

    @nn.nowrap
    def file_settings(self) -> dict:
        """What reading the file back needs besides the tensors (stored in its header)."""
        return {}

    @nn.nowrap
    def params_from_file(self, tensors: dict, settings: dict) -> dict:
        """The parameters that render a compressed file's decoded `tensors` (flat names)."""
        raise NotImplementedError(f"{type(self).__name__} has no compressed form")

    @nn.nowrap
    def file_bindings(self) -> list:
        """Gin bindings under which the field renders `params_from_file` output."""
        return []

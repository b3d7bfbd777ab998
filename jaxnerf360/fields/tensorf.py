"""TensoRF's VM (vector-matrix) decomposed radiance field (maths in `fields.vm`).

density(p) = act(sum_m sum_r plane_m[r](p_a, p_b) * line_m[r](p_c))
features(p) = concat_m [plane_m[r](p_a, p_b) * line_m[r](p_c)]_r @ basis (no bias)
rgb(p, d) = MLP(features, d, PE(features), PE(d))
"""

import re
from collections.abc import Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360 import parallel, precision, schedules
from jaxnerf360.fields import spectral, tensorf_settings, vm, wavelet
from jaxnerf360.fields.base import Field
from jaxnerf360.fields.vm import MODES, resample_factor, vm_components
from jaxnerf360.geometry import coord, filters
from jaxnerf360.objective import LossTerm
from jaxnerf360.parts import NETWORK, ParamGroup

GRID = "grid"  # the optimiser group of planes and lines
MASK = "mask"  # the optimiser group of wavelet mask logits


@gin.configurable
class TensoRFField(Field):
    """The VM-decomposed field (TensoRF VM-192 defaults); points in, density and colour out.

    Ignores the Gaussians' covariances: it samples the grid at their means.
    """

    density_ranks: Sequence[int] = (16, 16, 16)
    appearance_ranks: Sequence[int] = (48, 48, 48)
    resolution: Sequence[int] = (128, 128, 128)  # grid points along x, y, z
    box_min: Sequence[float] = (-1.5, -1.5, -1.5)
    box_max: Sequence[float] = (1.5, 1.5, 1.5)
    app_dim: int = 27
    mlp_width: int = 128
    feature_pe: int = 2
    view_pe: int = 2
    feature_dim: int = 0  # a `features` channel from the colour MLP for a head (0: none)
    # Upsampling: at each step in upsample_steps the voxel count grows log-linearly from
    # resolution to final_resolution (None: no upsampling); see resolution_schedule.
    upsample_steps: Sequence[int] = (2000, 3000, 4000, 5500, 7000)
    final_resolution: Sequence[int] | None = (300, 300, 300)
    density_activation: str = "softplus"  # softplus | relu
    density_shift: float = -10.0
    density_scale: float = 25.0  # TensoRF's distance_scale, folded into the density
    init_scale: float = 0.1
    # Masked wavelet planes (jaxnerf360/fields/wavelet.py): 'wavelet' stores each plane as
    # packed multi-level DWT coefficients, with trainable binary masks on planes and lines and
    # 8-bit quantisation-aware rounding; 'spatial' is TensoRF. Grid sizes are rounded to
    # multiples of 2^wavelet_levels.
    plane_coding: str = "spatial"  # spatial | wavelet
    wavelet: str = "bior4.4"  # any PyWavelets discrete wavelet: haar, db2, bior4.4, ...
    wavelet_levels: int = 4
    # Stored coefficients of level l (0: coarsest LL, then coarse to fine details) are divided
    # by level_divisors[l] before the inverse DWT. None: 2^-depth, so a stored unit moves the
    # plane by about one unit at every level, as in a spatial plane (the published code uses
    # 1, 2, ..., levels + 1, which trains coarse levels 2^depth times slower).
    level_divisors: Sequence[float] | None = None
    quantize_bits: int = 8  # quantisation-aware rounding of stored values; 0 disables
    # Initial mask logit: every coefficient starts kept, sigmoid(2) = 0.88 away from the edge,
    # so only a steady push (the data against the mask penalty) turns a mask off, not noise.
    mask_init: float = 2.0

    # Spectral control (jaxnerf360/fields/spectral.py): Gaussian filtering of the factors with
    # a width in world units on a schedule ((train_frac, width), ...), piecewise linear and
    # non-increasing; () is off. With blur_random_scale each step scales the widths by a
    # random factor in [0, 1] (density and appearance drawn independently).
    density_blur: Sequence = ()
    appearance_blur: Sequence = ()
    blur_random_scale: bool = False

    # Training of the grid factors (planes, lines and mask logits): their own Adam rate, and
    # TensoRF's regularisers. The L1 weight on the density factors drops from l1_density_mult
    # to l1_density_mult_rest at l1_density_switch_step (TensoRF's first alpha-mask update);
    # the TV weights decay with the grid learning rate, as in TensoRF.
    grid_lr_init: float = 0.02
    grid_lr_final: float = 0.002
    l1_density_mult: float = 0.0
    l1_density_mult_rest: float | None = None  # None: no switch
    l1_density_switch_step: int = 0
    tv_density_mult: float = 0.0  # = 0.02 x TensoRF's TV_weight_density
    tv_appearance_mult: float = 0.0  # = 0.02 x TensoRF's TV_weight_app
    # Masked wavelet planes: weight w of the mask penalty w * mean(sigmoid(m)) over every mask
    # logit (the expected kept fraction): w is the loss that keeping every coefficient is
    # worth, whatever the grid size. Larger gives sparser, smaller files.
    mask_loss_mult: float = 0.0

    # The VM products through the compiled CPU kernel (fields/vm_kernel.py) on a single CPU
    # device; False, or elsewhere: XLA's gathers (the same numbers, slower on a CPU).
    cpu_kernel: bool = True

    supports_pose_optimization = True  # gradients reach the sample positions
    separable_appearance = True

    def __post_init__(self):
        tensorf_settings.check(self)
        if self.plane_coding == "wavelet":
            object.__setattr__(self, "resolution", tensorf_settings.wavelet_resolution(self))
        super().__post_init__()

    def round_resolution(self, resolution) -> tuple:
        """`resolution` as the field stores it: multiples of 2^levels for wavelet planes."""
        return tensorf_settings.round_resolution(self, resolution)

    # --- what the field declares to the other stages (fields/base.py) ---

    def param_labels(self, params):
        """GRID for planes and lines, MASK for wavelet mask logits, NETWORK for the rest."""
        def label(path, _):
            name = str(getattr(path[0], "key", "")) if len(path) == 1 else ""
            if wavelet.is_mask(name):
                return MASK
            return GRID if vm.is_factor(name) else NETWORK

        return jax.tree_util.tree_map_with_path(label, params)

    def param_groups(self) -> dict:
        """The grid factors' rate; masks at the same rate with a tiny Adam epsilon."""
        groups = {GRID: ParamGroup(self.grid_lr_init, self.grid_lr_final)}
        if self.plane_coding == "wavelet":
            groups[MASK] = ParamGroup(self.grid_lr_init, self.grid_lr_final,
                                      eps=wavelet.MASK_ADAM_EPS)
        return groups

    def channels(self) -> dict:
        """rgb and, with feature_dim, features."""
        return {"rgb": 3, **({"features": self.feature_dim} if self.feature_dim else {})}

    def regularizers(self) -> list:
        """TensoRF's L1 on the density factors and TV on the planes; the mask terms."""
        terms = []
        if self.l1_density_mult > 0 or self.l1_density_mult_rest:
            terms.append(LossTerm("l1_density", lambda i: vm.l1_density(i.field_params),
                                  self._l1_weight))
        for prefix, mult in (("density", self.tv_density_mult),
                             ("appearance", self.tv_appearance_mult)):
            if mult > 0:
                terms.append(LossTerm(f"tv_{prefix}",
                                      lambda i, p=prefix: vm.tv_planes(i.field_params, p),
                                      lambda i, m=mult: m * i.lr_ratio[GRID]))
        if self.plane_coding == "wavelet":
            terms += wavelet.mask_terms(self.mask_loss_mult)
        return terms

    def _l1_weight(self, inputs):
        if self.l1_density_mult_rest is None:
            return self.l1_density_mult
        return jnp.where(inputs.step >= self.l1_density_switch_step, self.l1_density_mult_rest,
                         self.l1_density_mult)

    def grid_resolution(self, params=None) -> tuple:
        """Grid points (x, y, z): read off the factors in `params`, else the initial ones."""
        if params and vm.has_factors(params):
            return vm.grid_resolution(params)
        return tuple(int(n) for n in self.resolution)

    def resolution_schedule(self) -> list:
        """[(step, (nx, ny, nz))] of the upsampling schedule (`tensorf_settings`)."""
        return tensorf_settings.resolution_schedule(self)

    def resize_leaf(self, path: tuple, value, resolution, moment: bool = False):
        """Factors and masks (and their moments) resampled; networks unchanged."""
        if len(path) != 1:
            return value
        return self.resize_factor(str(path[0]), value, resolution, moment)

    def partition_leaf(self, path: tuple, shape: tuple, model_size: int) -> tuple:
        """Planes (and their masks) split along their widest spatial axis; lines and
        networks whole (small, and read by every sample)."""
        if len(path) != 1 or _plane_mode(str(path[0])) is None or len(shape) < 2:
            return ()
        return parallel.widest_axis_spec(shape, (len(shape) - 2, len(shape) - 1), model_size)

    def spectral_end(self) -> float:
        """When both 3D filter schedules have reached zero."""
        return max(schedules.end_fraction(self.density_blur),
                   schedules.end_fraction(self.appearance_blur))

    def file_tensors(self, params, network_dtype: str) -> dict | None:
        """Masked wavelet planes as codec records; None for spatial planes (no compressed form)."""
        if self.plane_coding != "wavelet":
            return None
        return wavelet.file_tensors(params, self.wavelet_settings(), network_dtype)

    def file_settings(self) -> dict:
        """The wavelet settings that decoding needs."""
        return self.wavelet_settings()

    def params_from_file(self, tensors: dict, settings: dict) -> dict:
        """Spatial VM parameters (flat names) of a decoded file: planes decoded once."""
        return wavelet.spatial_params(tensors, settings)

    def file_bindings(self) -> list:
        """A decoded file is a plain spatial VM field."""
        return list(wavelet.RENDER_BINDINGS)

    # --- the field ---

    def _factors(self, name, ranks):
        init = nn.initializers.normal(self.init_scale)
        planes, lines = [], []
        for m, ((a, b), c) in enumerate(MODES):
            shapes = {f"{name}_plane_{m}": (ranks[m], self.resolution[a], self.resolution[b]),
                      f"{name}_line_{m}": (ranks[m], self.resolution[c])}
            for key, shape in shapes.items():
                # After upsampling the stored factors are larger than `resolution`: use them.
                if self.has_variable("params", key):
                    value = self.get_variable("params", key)
                elif self.plane_coding == "wavelet" and "plane" in key:
                    # The same random spatial planes as the VM field, stored as coefficients.
                    value = self.param(key, lambda k, s: wavelet.encode_plane(
                        init(k, s), self.wavelet_settings()), shape)
                else:
                    value = self.param(key, init, shape)
                if self.plane_coding == "wavelet":
                    logits = self._mask_logits(key, value.shape)
                    value = wavelet.decode_factor(key, value, logits, self.wavelet_settings())
                (planes if "plane" in key else lines).append(value)
        return planes, lines

    def _mask_logits(self, key, shape):
        name = wavelet.mask_name(key)
        if self.has_variable("params", name):
            return self.get_variable("params", name)
        return self.param(name, nn.initializers.constant(self.mask_init), shape)

    def wavelet_settings(self) -> dict:
        """The settings of `fields.wavelet` functions (wavelet coding only)."""
        divisors = None if self.level_divisors is None else tuple(self.level_divisors)
        return {"wavelet": self.wavelet, "levels": int(self.wavelet_levels),
                "divisors": divisors, "bits": int(self.quantize_bits)}

    def resize_factor(self, name: str, value, resolution, moment: bool = False):
        """A parameter (or, with `moment`, an Adam moment of it) resampled to `resolution`.

        Spatial factors are resampled linearly (`resample_factor`). Wavelet planes are
        resampled as the spatial planes they represent; their masks, and the moments of planes
        and masks, band by band (see `fields.wavelet`).
        """
        m = _plane_mode(name)
        if self.plane_coding != "wavelet" or m is None:
            return resample_factor(name, value, resolution)
        (a, b), _ = MODES[m]
        hw = (int(resolution[a]), int(resolution[b]))
        if moment or wavelet.is_mask(name):
            return wavelet.resample_bands(value, hw, int(self.wavelet_levels))
        return wavelet.resample_coefficients(value, hw, self.wavelet_settings())

    def _filtered(self, name, ranks, schedule, progress):
        """The factors of `name`, Gaussian-filtered by the spectral-control schedule."""
        planes, lines = self._factors(name, ranks)
        if not schedule or progress is None or not progress.get("spectral", True):
            return planes, lines
        width = schedules.schedule_value(schedule, progress["train_frac"])
        if self.blur_random_scale and progress.get("rng") is not None:
            key = jax.random.fold_in(progress["rng"], 0 if name == "density" else 1)
            width = width * jax.random.uniform(key)
        res = (lines[2].shape[1], lines[1].shape[1], lines[0].shape[1])  # static shapes
        voxel = spectral.voxel_sizes(self.box_min, self.box_max, res)
        radius = filters.kernel_radius(schedules.max_value(schedule) / float(voxel.min()))
        sigma = width / jnp.asarray(voxel, jnp.float32)
        # Once the schedule reaches zero the (wide, static) kernel is skipped, not applied.
        return jax.lax.cond(width > 0, lambda: spectral.filter_vm(planes, lines, sigma, radius),
                            lambda: (planes, lines))

    @nn.compact
    def __call__(self, means, covs, viewdirs=None, progress=None, with_density: bool = True):
        """Returns {'density': [..., n], 'rgb': [..., n, 3]} (and `features [..., n,
        feature_dim]`) at the Gaussians' means; without density when not `with_density`.

        `progress` ({'train_frac', 'rng'}, during training) drives the spectral control.
        """
        del covs
        batch = means.shape[:-1]
        points = means.reshape(-1, 3)
        lo, hi = jnp.asarray(self.box_min), jnp.asarray(self.box_max)
        out = self._density(points, lo, hi, batch, progress) if with_density else {}
        if viewdirs is None:
            return out
        return {**out, **self._appearance(points, lo, hi, batch, viewdirs, progress)}

    def _density(self, points, lo, hi, batch, progress):
        d_planes, d_lines = self._filtered("density", self.density_ranks, self.density_blur,
                                           progress)
        comps = jnp.concatenate(vm_components(d_planes, d_lines, points, lo, hi,
                                             self.cpu_kernel), -1)
        # A product with ones, not a sum: XLA:CPU fuses the gathers into a reduction that runs
        # several times slower than the gathers and a matrix-vector product apart.
        sigma = comps @ jnp.ones(comps.shape[-1], comps.dtype)
        if self.density_activation == "relu":
            density = jax.nn.relu(sigma)
        else:
            density = jax.nn.softplus(sigma + self.density_shift)
        density = self.density_scale * density
        inside = jnp.all((points >= lo) & (points <= hi), axis=-1)
        return {"density": jnp.where(inside, density, 0.0).reshape(batch)}

    def _appearance(self, points, lo, hi, batch, viewdirs, progress):
        out = {}
        a_planes, a_lines = self._filtered("appearance", self.appearance_ranks,
                                           self.appearance_blur, progress)
        comps = jnp.concatenate(vm_components(a_planes, a_lines, points, lo, hi,
                                             self.cpu_kernel), -1)
        feats = precision.dense(self.app_dim, use_bias=False, name="basis")(comps)
        dirs = jnp.broadcast_to(viewdirs[..., None, :], batch + (3,)).reshape(-1, 3)
        x = [feats, dirs]
        if self.feature_pe > 0:
            x.append(coord.pos_enc(feats, 0, self.feature_pe, append_identity=False))
        if self.view_pe > 0:
            x.append(coord.pos_enc(dirs, 0, self.view_pe, append_identity=False))
        x = jnp.concatenate(x, -1)
        x = nn.relu(precision.dense(self.mlp_width)(x))
        x = nn.relu(precision.dense(self.mlp_width)(x))
        out["rgb"] = jax.nn.sigmoid(precision.dense(3)(x)).reshape(batch + (3,))
        if self.feature_dim:
            out["features"] = precision.dense(self.feature_dim, name="features")(x).reshape(
                batch + (self.feature_dim,))
        return out


def _plane_mode(name: str) -> int | None:
    """The mode m of a plane or plane-mask parameter name (`..._plane_m`), else None."""
    match = re.search(r"_plane(?:mask)?_(\d)$", name)
    return int(match.group(1)) if match else None

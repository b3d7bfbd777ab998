"""Samplers: where along each ray the field is evaluated (`samplers.base.Sampler`).

`proposal.ProposalSampler` is mip-NeRF 360's online-distilled proposal sampling;
`occupancy.OccupancySampler` is TensoRF's uniform steps with an occupancy grid (its state) that
skips empty space. Either works with either field.
"""

from jaxnerf360.samplers.base import (
    Sampler,
    Samples,
    SamplingContext,
    field_warp,
    rays_to_gaussians,
)
from jaxnerf360.samplers.occupancy import CONTRACTED_BOX, OccupancySampler
from jaxnerf360.samplers.proposal import ProposalSampler, anneal_power

__all__ = ["CONTRACTED_BOX", "OccupancySampler", "ProposalSampler", "Sampler", "SamplingContext",
           "Samples", "anneal_power", "field_warp", "rays_to_gaussians"]

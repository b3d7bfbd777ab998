"""Radiance fields: swappable parts with one small interface (`fields.base.Field`).

`mlp.MLPField` is mip-NeRF 360's MLP (and `PropMLPField` its proposal MLP), `tensorf.TensoRFField`
TensoRF's VM field, with masked wavelet planes (`wavelet`) and spectral control (`spectral`) as
options; `vm` holds the VM maths. A field never knows which sampler calls it.
"""

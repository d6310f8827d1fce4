from setuptools import find_packages, setup

setup(
    name="dfp-jax",
    version="0.1.0",
    description="Drifting Field Policy (DFP) in JAX/Flax: one-step generative policies for "
                "offline-to-online RL.",
    python_requires=">=3.11",
    packages=find_packages(include=["dfp_jax", "dfp_jax.*", "experiments", "experiments.*"]),
    install_requires=[
        "jax>=0.7",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "chex>=0.1.90",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "ogbench>=1.1.2",
        "numpy",
        "tqdm",
        "tensorboardX",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=8", "nbformat", "nbclient", "ipykernel"],
        # Robomimic: robosuite 1.4.1 breaks on mujoco >= 3.10, and mujoco 3.1.6 leaks ~50 file
        # descriptors per model build (robosuite rebuilds the model at every reset). 3.3.7 with
        # its dm_control 1.0.34 runs robosuite and ogbench and does not leak.
        "robomimic": ["h5py", "mujoco==3.3.7", "dm_control==1.0.34", "robosuite==1.4.1"],
    },
)

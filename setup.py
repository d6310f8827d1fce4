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
        # ogbench's envs run on mujoco + dm_control; pinned here (the same pins as the Robomimic
        # extra) so OGBench numbers do not depend on whether the extra is installed.
        "mujoco==3.7.0",
        "dm_control==1.0.39",
        "numpy",
        "tqdm",
        "tensorboardX",
        "tensorboard",  # the `tensorboard` command the README opens runs with
        "matplotlib",
        "pillow",
        "imageio-ffmpeg",  # mp4 (H.264) rollout videos; GIF without it
    ],
    extras_require={
        # The remote-workdir tests run against a local Cloud Storage emulator.
        # pytest-xdist: the suite runs on every core (pytest.ini).
        "test": ["pytest>=8", "pytest-xdist", "nbformat", "nbclient", "ipykernel", "wandb", "gcsfs",
                 "gcp-storage-emulator"],
        "wandb": ["wandb"],
        # gs:// workdirs (TPU pods): the path layer's files go through gcsfs.
        "gcs": ["gcsfs"],
        # Robomimic: the official low_dim_v15.hdf5 files were made with robosuite 1.5.1, whose
        # `object` observation differs from 1.4's, so a policy trained on them must act in 1.5.1.
        # robosuite fails on mujoco >= 3.10 and robosuite 1.5.2 needs numpy < 2 (this project
        # runs numpy 2 with jax 0.10); mujoco 3.7.0 with its dm_control 1.0.39 runs robosuite 1.5.1
        # and ogbench, and does not leak file descriptors when robosuite rebuilds its model at
        # every reset.
        # huggingface_hub fetches the official files (robomimic/robomimic_datasets) when missing.
        "robomimic": ["h5py", "robosuite==1.5.1", "mujoco==3.7.0", "dm_control==1.0.39",
                      "huggingface_hub"],
    },
)

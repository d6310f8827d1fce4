"""Data and environments: tasks, replay, each benchmark's datasets, environments and
scripted demonstrators."""

import warnings


class DatasetError(Exception):
  """A dataset that is missing, corrupt or does not match its environment."""


# Two warnings that building a MuJoCo environment prints on a machine without a screen and that
# say nothing about the run, silenced here by message and module only: dm_control's probe of a
# GLFW window (rendering falls back to EGL or OSMesa), and gymnasium's note, at every reset,
# that ogbench's float64 action bounds are stored as float32.
warnings.filterwarnings("ignore", message=r".*DISPLAY environment variable is missing",
                        module="glfw")
warnings.filterwarnings("ignore", message=r".*Box (low|high)'s precision lowered by casting to float32",
                        category=UserWarning, module="gymnasium.spaces.box")

"""Data and environments: tasks, replay, each benchmark's datasets, environments and
scripted demonstrators."""


class DatasetError(Exception):
  """A dataset that is missing, corrupt or does not match its environment."""

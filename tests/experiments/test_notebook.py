"""The kernel-bandwidth notebook runs top to bottom at its small size."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_kernel_bandwidth_notebook_executes_small(tmp_path, monkeypatch):
  monkeypatch.setenv("DFP_NOTEBOOK_SIZE", "small")
  monkeypatch.setenv("DFP_NOTEBOOK_FIGURES", str(tmp_path))
  monkeypatch.delenv("DFP_NOTEBOOK_RUNS", raising=False)
  nb = nbformat.read(os.path.join(ROOT, "experiments/notebooks/kernel_bandwidth.ipynb"), 4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  # The generator sweep printed a fit for all 35 settings, and the RL part a table.
  assert text.count("energy distance") == 35
  assert "agent.temperatures=0.05, agent.affinity_floor=1e-06" in text
  assert "agent.temperatures=0.2" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # field arrows, generators, learning curves
  for name in ("kernel_bandwidth_field.png", "kernel_bandwidth_generators.png"):
    assert (tmp_path / name).stat().st_size > 10_000
  # From a dot at the ring's centre, the released floor pulls 8-per-state sets to the mean of
  # their positives (no mode at R = 0.05), the floorless field fans out to every mode, and
  # large sets stall under the absolute floor where the relative one learns at R = 0.2.
  lines = {" ".join(l.split("energy")[0].split()): l for l in text.splitlines()
           if "energy distance" in l}
  assert "modes covered 0/8" in lines["8 per state floor released laplace R=0.05"]
  assert "modes covered 8/8" in lines["8 per state floor off laplace R=0.05"]
  assert "modes covered 0/8" in lines["256 in one set floor released laplace R=0.2"]
  assert "modes covered 8/8" in lines["256 in one set floor relative laplace R=0.2"]

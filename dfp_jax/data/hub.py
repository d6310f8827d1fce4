"""Files from the Hugging Face hub (robomimic's datasets, the OGBench mirror), one at a time.

`fetch` fails fast and says why in one phrase (no huggingface_hub, HF_HUB_OFFLINE, no
network), so a caller can fall back to its own message. HF_ENDPOINT and HF_TOKEN are
honoured.
"""

import os
import shutil
import socket
import urllib.parse
from typing import Optional


def fetch(repo: str, filename: str, path: str, timeout: float = 30.0) -> Optional[str]:
  """Download `filename` of dataset repo `repo` to `path`: None when it is there, else why not
  (a connection that fails or stays silent for `timeout` s included). The file goes through
  `<dir of path>/.download/` and is moved into place whole."""
  if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
    return "HF_HUB_OFFLINE is set"
  try:
    from huggingface_hub import hf_hub_download
  except ImportError:
    return "huggingface_hub is not installed"
  endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
  url = urllib.parse.urlparse(endpoint)
  host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
  try:  # one quick probe: huggingface_hub retries a refused connection for half a minute
    socket.create_connection((host, port), timeout=timeout).close()
  except OSError as e:
    return f"cannot reach {host}:{port}: {type(e).__name__}: {e}"
  staging = os.path.join(os.path.dirname(os.path.abspath(path)), ".download")
  print(f"downloading {repo}/{filename} from the Hugging Face hub to {path}")
  try:
    local = hf_hub_download(repo, filename, repo_type="dataset", local_dir=staging,
                            endpoint=endpoint, etag_timeout=timeout)
    os.replace(local, path)
  except Exception as e:  # noqa: BLE001  (connection, HTTP and file errors alike)
    text = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return None

"""A local Cloud Storage emulator for the remote-workdir tests: `python gcs_emulator.py PORT
BUCKET` serves an in-memory bucket on 127.0.0.1:PORT and prints "ready".

gcp-storage-emulator with two changes that tensorstore (orbax's checkpoint arrays) needs:
a listen queue long enough for its many simultaneous connections (requests are served one at
a time), and the `x-goog-generation` header real GCS sends with every download, which its gcs
driver reads (without it: "Malformed StorageGeneration"). The emulator ignores write
preconditions (ifGenerationMatch), so concurrent writers are not tested against it.
"""

import http.server
import sys
import time
import types
from http import HTTPStatus

from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.handlers import objects


class _Queued(http.server.HTTPServer):
  request_queue_size = 1024


_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = obj["generation"]


def main(port: int, bucket: str):
  emulator.server = types.SimpleNamespace(HTTPServer=_Queued)
  objects.download = _download_with_generation  # objects.get(alt=media) calls it by this name
  for _, handlers in emulator.HANDLERS:
    for method, fn in list(handlers.items()):
      if fn is _download:
        handlers[method] = _download_with_generation
  emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).start()
  print("ready", flush=True)
  while True:
    time.sleep(3600)


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])

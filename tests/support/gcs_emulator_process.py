"""The test GCS endpoint as one child process: ``gcp-storage-emulator`` plus the googleapis relay.

Run as ``python -m tests.support.gcs_emulator_process --workdir DIR`` from the repository
root.  Prints one JSON line ``{"emulator_port": ..., "relay_port": ...}`` once both
listen on 127.0.0.1, then serves until its stdin closes, so the servers die with
the test process even when that process is killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from http import HTTPStatus
from pathlib import Path

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects as emulator_objects

from tests.support.googleapis_relay import GoogleApisRelay, write_certificates

HOST = "127.0.0.1"


def _read_chunked_body(request_handler) -> bytes:  # noqa: ANN001 (the emulator's handler)
    body = b""
    while True:
        size = int(request_handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            request_handler.rfile.readline()  # blank line after the last chunk (no trailers sent)
            return body
        body += request_handler.rfile.read(size)
        request_handler.rfile.readline()


def _patch_emulator_for_tensorflow() -> None:
    """Makes the emulator handle TensorFlow's uploads the way GCS does.

    Three gaps in gcp-storage-emulator that TensorFlow's GCS client runs into:
    - its resumable-upload PUTs carry both ``Transfer-Encoding: chunked`` and
      ``Content-Length``; HTTP says chunked wins (RFC 9112 6.3), the emulator
      used Content-Length and stored the chunk framing as object data;
    - ``gfile.makedirs`` writes zero-byte ``dir/`` objects with ``uploadType=media``;
      the emulator read the empty body as ``None`` and failed in ``len(None)``;
    - it never answers ``Expect: 100-continue`` (see ``_RequestHandlerAnsweringExpect``).
    """
    read_raw_data = emulator_server._read_raw_data
    read_data = emulator_server._read_data

    def read_raw_data_chunked_first(request_handler):  # noqa: ANN001, ANN202 (emulator's signature)
        if request_handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return _read_chunked_body(request_handler)
        return read_raw_data(request_handler)

    def read_data_keeping_empty_media(request_handler, query):  # noqa: ANN001, ANN202 (emulator's signature)
        data = read_data(request_handler, query)
        if data is None and query.get("uploadType") == ["media"]:
            return b""
        return data

    emulator_server._read_raw_data = read_raw_data_chunked_first
    emulator_server._read_data = read_data_keeping_empty_media
    emulator_server.RequestHandler = _RequestHandlerAnsweringExpect


def _honour_generation_preconditions() -> None:
    """Makes uploads and deletes check ``ifGenerationMatch`` as GCS does (the emulator ignores it).

    The product's leases rely on it: create only if absent (``ifGenerationMatch=0``) and
    replace or delete only the generation that was read.
    """

    def current_generation(storage, bucket: str, name: str | None) -> str:  # noqa: ANN001
        try:
            return str(storage.get_file_obj(bucket, name)["generation"])
        except NotFound:
            return "0"

    def checked(handler, name_of):  # noqa: ANN001, ANN202
        def run(request, response, storage, *args, **kwargs):  # noqa: ANN001, ANN202
            wanted = request.query.get("ifGenerationMatch")
            if wanted and current_generation(storage, request.params["bucket_name"],
                                             name_of(request)) != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "conditionNotMet"}})
                return None
            return handler(request, response, storage, *args, **kwargs)
        return run

    def upload_name(request) -> str | None:  # noqa: ANN001
        if "name" in request.query:
            return request.query["name"][0]
        data = request.data if isinstance(request.data, dict) else {}
        return (data.get("meta") or {}).get("name")

    wrapped = {emulator_objects.insert: checked(emulator_objects.insert, upload_name),
               emulator_objects.delete: checked(emulator_objects.delete,
                                                lambda request: request.params["object_id"])}
    for _pattern, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                handlers[method] = wrapped[handler]
    emulator_objects.insert = wrapped[emulator_objects.insert]  # the fallback route looks it up by name


class _RequestHandlerAnsweringExpect(emulator_server.RequestHandler):
    """Answers ``Expect: 100-continue`` at once instead of letting curl wait 1 s for it.

    The emulator speaks HTTP/1.0, for which Python's handler never sends ``100 Continue``;
    TensorFlow's client asks for it on every upload, so each written object cost a second.
    """

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed and self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        return parsed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True, help="where the relay certificates go")
    args = parser.parse_args(argv)
    # The emulator logs every request at DEBUG; keep only real problems.
    logging.basicConfig(level=logging.ERROR)

    emulator_port = _free_port()
    _patch_emulator_for_tensorflow()
    _honour_generation_preconditions()
    emulator = emulator_server.create_server(HOST, emulator_port, in_memory=True)
    emulator.start()
    relay = GoogleApisRelay((HOST, emulator_port), write_certificates(args.workdir)).start()
    print(json.dumps({"emulator_port": emulator_port, "relay_port": relay.server_address[1]}), flush=True)
    try:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
    finally:
        relay.stop()
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A local HTTPS relay that lets TensorFlow's own ``gs://`` client talk to a GCS emulator.

TensorFlow's built-in GCS filesystem has its endpoints compiled in
(``https://www.googleapis.com/storage/v1/``, ``https://storage.googleapis.com``) and
ignores ``STORAGE_EMULATOR_HOST``.  Its libcurl does honour ``https_proxy`` and
``CURL_CA_BUNDLE``, so the tests run this relay as that proxy: it accepts
``CONNECT www.googleapis.com:443``, terminates TLS with a throwaway certificate
signed by a throwaway CA, rewrites ``Host`` to the emulator (so resumable-upload
``Location`` URLs point straight at it) and pipes the bytes to the emulator over
plain HTTP.  Only the Google API host names are relayed; anything else is refused,
so nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import select
import socket
import socketserver
import ssl
import sys
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GOOGLE_API_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")
_IDLE_TIMEOUT_S = 60.0
_HOST_HEADER = re.compile(rb"^Host:[^\r\n]*\r\n", re.IGNORECASE | re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class RelayCertificates:
    ca_bundle: Path  # what libcurl must trust (CURL_CA_BUNDLE)
    server_cert: Path
    server_key: Path


def write_certificates(directory: Path) -> RelayCertificates:
    """A one-day CA and a server certificate for the Google API host names."""
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audio-tagger test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_API_HOSTS[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_API_HOSTS]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    certificates = RelayCertificates(
        ca_bundle=directory / "relay-ca.pem",
        server_cert=directory / "relay-server.pem",
        server_key=directory / "relay-server.key",
    )
    certificates.ca_bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certificates.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    certificates.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificates


def _recv_all_pending(sock: socket.socket) -> bytes:
    """Reads what is available, including TLS records already decrypted into the buffer.

    ``select`` only sees the raw socket; a TLS socket can hold a whole decrypted
    record that ``select`` will never report, so drain ``pending()`` too.
    """
    data = sock.recv(65536)
    while data and isinstance(sock, ssl.SSLSocket) and sock.pending():
        data += sock.recv(sock.pending())
    return data


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Reads up to the end of the HTTP header block; returns (head, bytes after it)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = _recv_all_pending(sock)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copies bytes both ways until either side closes (the emulator closes after each response)."""
    sockets = [client, upstream]
    while True:
        readable, _, _ = select.select(sockets, [], [], _IDLE_TIMEOUT_S)
        if not readable:
            return
        for source in readable:
            data = _recv_all_pending(source)
            if not data:
                return
            (upstream if source is client else client).sendall(data)


_STORAGE_LAYOUT = re.compile(rb"^GET /storage/v1/b/([^/?\s]+)/storageLayout[?\s]")


class _RelayHandler(socketserver.BaseRequestHandler):
    server: GoogleApisRelay

    def handle(self) -> None:
        connect = _read_head(self.request)
        if connect is None:
            return
        request_line = connect[0].split(b"\r\n", 1)[0].decode("latin-1")
        method, target, _ = (request_line.split(" ") + ["", ""])[:3]
        host = target.rsplit(":", 1)[0]
        if method != "CONNECT" or host not in GOOGLE_API_HOSTS:
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self.server.tls_context.wrap_socket(self.request, server_side=True) as client:
            request = _read_head(client)
            if request is None:
                return
            head, body_start = request
            layout = _STORAGE_LAYOUT.match(head)
            if layout:
                # TensorFlow asks for a bucket's layout before renaming "directories";
                # the emulator lacks this endpoint, real GCS answers it like this.
                body = json.dumps({"kind": "storage#storageLayout", "bucket": layout.group(1).decode(),
                                   "hierarchicalNamespace": {"enabled": False}}).encode()
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                return
            emulator_host = f"Host: {self.server.emulator_address[0]}:{self.server.emulator_address[1]}\r\n"
            head = _HOST_HEADER.sub(emulator_host.encode("latin-1"), head, count=1)
            with socket.create_connection(self.server.emulator_address) as upstream:
                upstream.sendall(head + body_start)
                _pipe(client, upstream)


class GoogleApisRelay(socketserver.ThreadingTCPServer):
    """HTTPS proxy on 127.0.0.1 that forwards Google API requests to the emulator."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator_address: tuple[str, int], certificates: RelayCertificates) -> None:
        self.emulator_address = emulator_address
        self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls_context.load_cert_chain(certificates.server_cert, certificates.server_key)
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self._thread = threading.Thread(target=self.serve_forever, name="googleapis-relay", daemon=True)

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # Clients drop connections mid-handshake or mid-response (pool shutdown, retries): not an error.
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def start(self) -> GoogleApisRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

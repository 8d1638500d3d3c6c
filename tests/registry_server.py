"""A real OCI registry for the tests: Debian's ``docker-registry`` (CNCF distribution 2.8) on 127.0.0.1.

Each ``RegistryServer`` owns a temporary storage folder and a free port; ``start``/``stop`` let a test take
the registry down and bring it back on the same port and storage. ``.ci/run`` installs the package; when
it is missing the tests fail with the install command rather than skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

INSTALL = "apt-get update && apt-get install -y docker-registry"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RegistryServer:
    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            pytest.fail(f"the OCI tests need Debian's docker-registry on PATH: {INSTALL}", pytrace=False)
        self.binary, self.root = binary, root
        self.storage = root / "storage"
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.config = root / "registry.yml"
        auth = f"auth:\n  htpasswd: {{realm: tests, path: {htpasswd}}}\n" if htpasswd else ""
        self.config.write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage:\n  filesystem: {{rootdirectory: {self.storage}}}\n  delete: {{enabled: true}}\n"
            f"http: {{addr: '{self.host}', secret: tests}}\n{auth}"
        )
        self.log = root / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RegistryServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "serve", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # it answers within ~0.15 s; the bound covers a loaded CI machine
            if self.process.poll() is not None:
                pytest.fail(f"docker-registry exited: {self.log.read_text()[-2000:]}", pytrace=False)
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"docker-registry did not answer on {self.host} within 15 s", pytrace=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def blob_file(self, digest: str) -> Path:
        """Where distribution keeps a blob's bytes on disk (for tampering tests)."""
        algorithm, hexdigest = digest.split(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"

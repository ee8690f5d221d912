"""Shared by the Python tests: where things are, golden files, and a real `flagforge host` on a
real tansu broker (the release binary and .tools/bin/tansu, as scripts/setup.sh installs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = Path(os.environ.get("FLAGFORGE_MODULES", ROOT / "target/conformance"))
CLI = ROOT / "target/release/flagforge"


def golden(name: str) -> dict:
    return json.loads((ROOT / "corpus/golden" / f"{name}.json").read_text())


def module_bytes(name: str) -> bytes:
    return (MODULES / f"{name}.wasm").read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(what: str, check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.1)


def cli(*args: str) -> str:
    return subprocess.run([str(CLI), *args], check=True, capture_output=True, text=True).stdout


class Host:
    """tansu + `flagforge publish` of the checkout module + `flagforge host`."""

    def __enter__(self) -> "Host":
        self.work = tempfile.TemporaryDirectory(prefix="flagforge-py-")
        w = Path(self.work.name)
        self.module = w / "checkout.wasm"
        cli("build", str(ROOT / "rules-examples/checkout"), "-o", str(self.module))
        cli("keygen", "--out", str(w / "keys"))
        kafka = f"127.0.0.1:{free_port()}"
        self.children = [
            subprocess.Popen(
                [str(ROOT / ".tools/bin/tansu"), "broker", "--listener-url", f"tcp://{kafka}",
                 "--advertised-listener-url", f"tcp://{kafka}", "--storage-engine", "memory://tansu/"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        ]
        until("the broker takes a publish", lambda: cli(
            "publish", str(self.module), "--brokers", kafka, "--key", str(w / "keys/flagforge.key"),
            "--reason", "launch") is not None)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.children.append(subprocess.Popen(
            [str(CLI), "host", "--brokers", kafka, "--trusted-key", str(w / "keys/flagforge.pub"),
             "--snapshot-dir", str(w / "snapshots"), "--listen", f"127.0.0.1:{port}",
             "--ruleset", "checkout"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        until("the host is ready", lambda: urllib.request.urlopen(f"{self.url}/readyz").status == 200)
        return self

    def __exit__(self, *exc) -> None:
        for c in self.children:
            c.kill()
            c.wait()
        self.work.cleanup()

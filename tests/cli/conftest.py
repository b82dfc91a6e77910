"""Running ``disengage`` as a user does: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


Disengage = Callable[..., Run]


@pytest.fixture
def disengage(tmp_path: Path) -> Disengage:
    """``disengage(*args, stdin=b"", env={})`` runs the command in ``tmp_path``
    and fails the test on any traceback in stderr."""

    def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "stream", *args],
            input=stdin,
            capture_output=True,
            timeout=120,
            cwd=tmp_path,
            # the code of this tree, whatever the working directory
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        result = Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        assert "Traceback" not in result.err, result.err
        return result

    return run


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def golden_events() -> Path:
    return GOLDEN / "session_mix.jsonl"

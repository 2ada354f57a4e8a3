import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"

# datasets must never reach for the network in tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep every datasets cache inside the test's temporary directory."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.fixture
def multi30k() -> Path:
    if not (MULTI30K / "val.de.gz").exists():
        pytest.skip(f"shared Multi30k corpus not found at {MULTI30K}")
    return MULTI30K


def run_mtkit(*args: str, stdin: str | None = None, cwd: Path | None = None, env: dict | None = None):
    """Run the real command line in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "mtkit", *args],
        input=stdin, capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
    )


@pytest.fixture
def mtkit_cli():
    return run_mtkit

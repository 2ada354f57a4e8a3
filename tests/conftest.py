import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REVERSE_SETTINGS, skip_unless_required, write_pair, write_reverse_task

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"

# datasets must never reach for the network in tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Session-wide datasets caches in a temporary directory (each test also gets its own, below).
_HF_TMP = tempfile.mkdtemp(prefix="mtkit-tests-hf-")
os.environ["HF_HOME"] = os.path.join(_HF_TMP, "home")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_TMP, "datasets")


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep every datasets cache inside the test's temporary directory."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.fixture
def multi30k() -> Path:
    if not (MULTI30K / "val.de.gz").exists():
        skip_unless_required(f"shared Multi30k corpus not found at {MULTI30K}")
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


@pytest.fixture(scope="session")
def reverse_data(tmp_path_factory):
    return write_reverse_task(tmp_path_factory.mktemp("reverse"))


@pytest.fixture(scope="session")
def reverse_model(reverse_data, tmp_path_factory):
    """A small model trained with the real CLI to reverse word sequences (~15 s on 2 cores)."""
    out = tmp_path_factory.mktemp("models") / "reverse"
    d = reverse_data
    res = run_mtkit("train", "-o", str(out), "--src", str(d["train_src"]), "--tgt", str(d["train_tgt"]),
                    "--valid-src", str(d["valid_src"]), "--valid-tgt", str(d["valid_tgt"]),
                    *REVERSE_SETTINGS, "--max-steps", "600", "--valid-every", "300", "--save-every", "100")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="session")
def reverse_with_tokenizer(reverse_data, reverse_model):
    return {**reverse_data, "tokenizer": reverse_model / "tokenizer"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, reverse_data):
    """300 pairs of the reverse task (`src`, `tgt`) and their first 200 (`short_src`, `short_tgt`)."""
    d = tmp_path_factory.mktemp("corpus")
    src = reverse_data["train_src"].read_text().splitlines()[:300]
    tgt = reverse_data["train_tgt"].read_text().splitlines()[:300]
    paths = dict(zip(("src", "tgt"), write_pair(d, src, tgt, "train")))
    paths["short_src"], paths["short_tgt"] = write_pair(d, src[:200], tgt[:200], "short")
    return paths


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed performance contract says what it guards: an optimisation changed, not behaviour."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("perf") is not None:
        report.sections.append(("performance contract", "this test guards an optimisation (marked perf): "
                                "what failed is the speed-up's promise, not what mtkit translates or learns"))

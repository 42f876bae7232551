"""Fixtures for the `modu serve` black-box tests.

Servers start lazily (session fixtures), so `pytest --collect-only` never launches one.

* `server`: the main server. Started with no `--host`, so it also shows the default bind
  address; `--port 0`, 4 batch slots, a 4096-token context and a 64-deep queue.
* `secure_server`: `--api-key` and `--cors-origins` set, the model named through `-m tiny=PATH`,
  verbose logging (`-vv`) so that the logs can be searched for the key.
* `spawn_server`: a factory for short-lived extra servers (other slot counts, a tiny queue,
  `--host 0.0.0.0`); each is stopped at the end of the test that made it.

Environment: MODU_BIN (binary, default target/release/modu), MODU_TEST_MODELS (model dir),
MODU_SERVER_START_TIMEOUT (seconds, default 180).
"""

from __future__ import annotations

import json

import os
import sys
from pathlib import Path

import pytest

import support
from support import CORS_ORIGINS, MODEL_ID, ModuServer, server_argv

MAIN_CTX = 4096
MAIN_PARALLEL = 4
MAIN_MAX_QUEUE = 64
SECURE_MODEL_ID = "tiny"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running (load, slowloris, repeats)")


def _start_timeout() -> float:
    return support.env_float("MODU_SERVER_START_TIMEOUT", 180.0)


@pytest.fixture(scope="session")
def model_path() -> Path:
    p = support.test_model_path()
    if not p.is_file():
        pytest.fail(f"test model not found: {p} (run scripts/fetch-test-models.sh)", pytrace=False)
    return p


@pytest.fixture(scope="session")
def vocab(model_path: Path) -> list[str]:
    """The token strings of the test model, read from its GGUF metadata."""
    return support.gguf_metadata(model_path)["tokenizer.ggml.tokens"]


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modu-serve-logs")


def _start(argv: list[str], logs_dir: Path, name: str, model_id: str,
           api_key: str | None = None) -> ModuServer:
    srv = ModuServer(argv, logs_dir, name, model_id, api_key)
    try:
        return srv.start(_start_timeout())
    except support.ServerStartError as e:
        pytest.fail(str(e), pytrace=False)


TOOL_MODEL_ID = "exaone4-tiny"


@pytest.fixture(scope="session")
def exaone4_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny EXAONE 4.0 fixture checkpoint with LG's EXAONE 4.0 chat template (tools, tool
    results) and a context long enough for tool prompts."""
    root = Path(__file__).resolve().parents[2]
    src = root / "tests" / "fixtures" / "exaone4_dense"
    d = tmp_path_factory.mktemp("exaone4-tiny")
    for f in src.iterdir():
        if f.name != "config.json":
            (d / f.name).symlink_to(f)
    cfg = json.loads((src / "config.json").read_text())
    cfg["max_position_embeddings"] = 4096
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "chat_template.jinja").write_text((root / "crates/modu-core/src/chat/templates/exaone4.jinja").read_text())
    return d


@pytest.fixture(scope="session")
def server(model_path: Path, logs_dir: Path, exaone4_dir: Path):
    argv = server_argv([str(model_path), f"{TOOL_MODEL_ID}={exaone4_dir}"], "--port", "0", "--parallel", str(MAIN_PARALLEL),
                       "--ctx", str(MAIN_CTX), "--max-queue", str(MAIN_MAX_QUEUE))
    srv = _start(argv, logs_dir, "main", MODEL_ID)
    srv.ctx = MAIN_CTX  # type: ignore[attr-defined]
    srv.parallel = MAIN_PARALLEL  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def secure_server(model_path: Path, logs_dir: Path):
    key = support.random_key()
    argv = server_argv([f"{SECURE_MODEL_ID}={model_path}"], "--host", "127.0.0.1", "--port", "0",
                       "--api-key", key, "--cors-origins", ",".join(CORS_ORIGINS),
                       "--parallel", "1", "--ctx", "1024", global_args=["-vv"])
    srv = _start(argv, logs_dir, "secure", SECURE_MODEL_ID, api_key=key)
    yield srv
    srv.stop()


@pytest.fixture
def spawn_server(model_path: Path, logs_dir: Path, request: pytest.FixtureRequest):
    """spawn_server(*serve_args, name=..., wait=True) -> ModuServer (model id MODEL_ID).
    With wait=False the process is only spawned (for tests of refusals to start)."""
    made: list[ModuServer] = []

    def spawn(*args: str, name: str | None = None, wait: bool = True,
              global_args: tuple[str, ...] = ()) -> ModuServer:
        name = name or f"{request.node.name}-{len(made)}".replace("/", "_").replace("[", "_").replace("]", "")
        srv = ModuServer(server_argv([str(model_path)], *args, global_args=global_args),
                         logs_dir, name, MODEL_ID)
        made.append(srv)
        if wait:
            try:
                srv.start(_start_timeout())
            except support.ServerStartError as e:
                pytest.fail(str(e), pytrace=False)
        else:
            srv.spawn()
        return srv

    yield spawn
    for srv in made:
        srv.stop()


@pytest.fixture
def client(server: ModuServer):
    """OpenAI(base_url=.../v1, max_retries=0, _strict_response_validation=True)."""
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def model_id(server: ModuServer) -> str:
    return server.model_id


@pytest.fixture(autouse=True)
def _server_still_up(request: pytest.FixtureRequest):
    """After each test: every session server the test used must still be running."""
    yield
    for name in ("server", "secure_server"):
        if name in request.fixturenames:
            srv = request.getfixturevalue(name)
            assert srv.alive(), (f"{srv.name} died (exit {srv.proc.returncode}); stderr tail:\n"
                                 f"{srv.stderr_text()[-3000:]}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"modu binary: {support.modu_bin()}", f"test model: {support.test_model_path()}",
            f"python: {sys.version.split()[0]}"]

"""docker-compose.yml and Dockerfile: valid config, health checks, volumes, and `hpo` commands
that the real CLI accepts (parsed only, never executed)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def test_compose_config_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be validated. "
            "Run the suite with scripts/test (it installs Debian's docker-compose package as "
            "root) or `apt-get install docker-compose`."
        )
    env = {**os.environ, "HPO_ADMIN_TOKEN": "hpo_" + "x" * 40}
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, f"docker-compose config -q failed:\n{proc.stdout}\n{proc.stderr}"
    # Without the admin secret the stack must refuse to start (the API listens on 0.0.0.0).
    bare = {k: v for k, v in env.items() if k != "HPO_ADMIN_TOKEN"}
    refused = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120, env=bare)
    assert refused.returncode != 0 and "HPO_ADMIN_TOKEN" in refused.stderr


def test_services_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "api", "worker"}
    assert set(compose.get("volumes") or {}) >= {"pgdata", "checkpoints"}

    postgres, api, worker = services["postgres"], services["api"], services["worker"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert any(str(v).startswith("pgdata:") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(_as_list(postgres["healthcheck"]["test"]))

    assert api["build"] == "."
    assert _env(api)["HPO_DATABASE_URL"] == "postgresql+psycopg://hpo:hpo@postgres:5432/hpo"
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    api_check = " ".join(_as_list(api["healthcheck"]["test"]))
    assert "urllib" in api_check and "http://localhost:8000/api/v1/health" in api_check
    assert any(str(p).endswith("8000") for p in api["ports"])

    assert worker["build"] == "."
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    assert "checkpoints:/checkpoints" in [str(v) for v in worker["volumes"]]
    assert _env(worker)["HPO_CHECKPOINT_URI"] == "file:///checkpoints"


def test_dockerfile_basics() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.MULTILINE)
    assert re.search(r"pip install .*\[\$\{EXTRAS\}\]|pip install .*\[server\]", text)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, "the image must run as a non-root user"


def test_hpo_commands_parse_with_the_real_cli(compose: dict[str, Any]) -> None:
    commands = _hpo_commands(compose)
    subcommands = {tuple(argv[1:3]) if argv[1] == "db" else (argv[1],) for argv in commands}
    assert {("db", "upgrade"), ("serve",), ("worker",)} <= subcommands, commands

    from typer.main import get_command  # the CLI is Typer's

    from hpo_service.cli import app

    root = get_command(app)
    failures = []
    for argv in commands:
        try:
            _parse(root, argv[1:])
        except Exception as exc:  # noqa: BLE001 -- click's UsageError and friends
            message = getattr(exc, "format_message", lambda: str(exc))()
            failures.append(f"{shlex.join(argv)}: {type(exc).__name__}: {message}")
    assert not failures, "commands the CLI rejects:\n" + "\n".join(failures)


def test_ray_head_and_gpu_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    head, node = services["ray-head"], services["ray-worker"]
    assert "ray-auth" in (compose.get("volumes") or {})
    for service in (head, node):
        assert "worker" in service["build"]["args"]["EXTRAS"].split(","), "the worker extra brings Ray"
        assert service["profiles"] == ["ray"]  # `docker-compose up` without GPUs is unchanged
        assert _env(service)["RAY_AUTH_MODE"] == "token"
        assert "ray-auth:/home/hpo/.ray" in [str(v) for v in service["volumes"]]

    [head_start] = [argv for argv in _shell_words(head["command"]) if argv[:2] == ["ray", "start"]]
    assert {"--head", "--block", "--port=6379"} <= set(head_start)
    assert "socket" in " ".join(_as_list(head["healthcheck"]["test"]))

    [gpu] = node["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert node["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert node["depends_on"]["api"]["condition"] == "service_healthy"
    assert "checkpoints:/checkpoints" in [str(v) for v in node["volumes"]]
    assert _env(node)["HPO_CHECKPOINT_URI"] == "file:///checkpoints"
    vectors = _shell_words(node["command"])
    assert vectors[0][:3] == ["ray", "start", "--address=ray-head:6379"]  # the node joins first...
    assert vectors[-1][:2] == ["hpo", "worker"]  # ...then its pool of actors runs on it

    from typer.main import get_command

    from hpo_service.cli import app
    from hpo_service.workers.ray_runtime import DEFAULT_DRAIN_TIMEOUT_S, RayOptions, ray_options_from_cli

    params = _parse(get_command(app), vectors[-1][1:]).params
    options = ray_options_from_cli(params["concurrency"], params["ray_address"], params["slots"],
                                   params["gpus_per_trial"])
    assert options == RayOptions("ray-head:6379", slots=4, gpus_per_trial=0.25)
    assert _seconds(node["stop_grace_period"]) > DEFAULT_DRAIN_TIMEOUT_S, "docker would kill a draining worker"


def test_ray_commands_parse_with_the_real_ray_cli(compose: dict[str, Any]) -> None:
    scripts = pytest.importorskip("ray.scripts.scripts")
    commands = [argv for service in compose["services"].values() if service.get("command")
                for argv in _shell_words(service["command"]) if argv[0] == "ray"]
    assert {tuple(argv[:2]) for argv in commands} == {("ray", "start"), ("ray", "get-auth-token")}
    failures = []
    for argv in commands:
        try:
            _parse(scripts.cli, [word for word in argv[1:] if not word.startswith(">") and word != "/dev/null"])
        except Exception as exc:  # noqa: BLE001 -- click's UsageError and friends
            message = getattr(exc, "format_message", lambda: str(exc))()
            failures.append(f"{shlex.join(argv)}: {type(exc).__name__}: {message}")
    assert not failures, "commands Ray's CLI rejects:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- helpers


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _seconds(duration: Any) -> float:
    """A compose duration (``150s``, ``2m30s``, ``1h``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts, f"not a duration: {duration!r}"
    return sum(float(value) * units[unit] for value, unit in parts)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _shell_words(command: Any) -> list[list[str]]:
    """A compose/Dockerfile command -> the argument vectors it runs (``sh -c`` unpacked)."""
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if len(argv) >= 3 and argv[0] in {"sh", "bash", "/bin/sh", "/bin/bash"} and argv[1] == "-c":
        vectors = []
        for part in re.split(r"&&|\|\||;", argv[2]):
            words = shlex.split(part)
            if words and words[0] == "exec":
                words = words[1:]
            if words:
                vectors.append(words)
        return vectors
    return [argv] if argv else []


def _hpo_commands(compose: dict[str, Any]) -> list[list[str]]:
    commands = []
    for service in compose["services"].values():
        for key in ("command", "entrypoint"):
            if service.get(key):
                commands += [v for v in _shell_words(service[key]) if v[0] == "hpo"]
    match = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    if match:
        commands += [v for v in _shell_words(json.loads(match.group(1))) if v[0] == "hpo"]
    return commands


def _protected_args(ctx: Any) -> list[str]:
    if hasattr(ctx, "_protected_args"):  # Typer's vendored click, click >= 8.2
        return list(ctx._protected_args)
    with warnings.catch_warnings():  # older click: public, later deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(ctx.protected_args)


def _parse(root: Any, args: list[str]) -> Any:
    """Parse ``hpo ARGS`` down to the leaf command, as the CLI would, without invoking it."""
    ctx = root.make_context("hpo", list(args))
    while hasattr(ctx.command, "resolve_command"):  # a group: descend into the subcommand
        rest = [*_protected_args(ctx), *ctx.args]
        if not rest:
            raise AssertionError(f"{ctx.command_path}: no subcommand given")
        name, sub, rest = ctx.command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx

"""The `hpo` command.

Exit codes: 0 success; 1 an error the server reported (not found, conflict);
4 the server cannot be reached; 64 bad usage or an invalid spec (the message
names the field).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from hpo_service.cli_render import (
    print_json,
    render_best,
    render_rungs,
    render_studies,
    render_study,
    render_tokens,
    render_transfer,
    render_trials,
)
from hpo_service.client import DEFAULT_SERVER, HpoClient, resolve_token
from hpo_service.errors import HpoError, InvalidInput, ServiceUnavailable

app = typer.Typer(help="hpo-service: hyperparameter optimisation for adapter fine-tunes.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
study_app = typer.Typer(help="Create, inspect and control studies.", no_args_is_help=True)
app.add_typer(db_app, name="db")
token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(study_app, name="study")
app.add_typer(token_app, name="token")
checkpoints_app = typer.Typer(help="The checkpoint store: collect what nothing refers to.", no_args_is_help=True)
app.add_typer(checkpoints_app, name="checkpoints")

console = Console(stderr=True)

Server = Annotated[str, typer.Option("--server", envvar="HPO_SERVER", help="API server URL.")]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="HPO_TOKEN", help="API token (default: .hpo/admin-token of a local server)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", envvar="HPO_DATABASE_URL", help="SQLAlchemy URL (default: SQLite file).")
]
StudyRef = Annotated[str, typer.Argument(help="Study id or name.")]

EXIT_SERVER_ERROR, EXIT_UNREACHABLE, EXIT_USAGE = 1, 4, 64


def fail(message: str, code: int) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _client(server: str, token: str | None = None) -> HpoClient:
    return HpoClient(server, token=resolve_token(token), retries=2)


def _run(action: Any) -> Any:
    try:
        return action()
    except InvalidInput as error:
        fail(error.message, EXIT_USAGE)
    except ServiceUnavailable as error:
        fail(f"{error.message} (is `hpo serve` running? set --server or HPO_SERVER)", EXIT_UNREACHABLE)
    except HpoError as error:
        fail(error.message, EXIT_SERVER_ERROR)


# --- server and database ----------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    database_url: DatabaseUrl = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="Upgrade the schema before starting.")] = False,
    processes: Annotated[int, typer.Option("--processes", min=1, max=64,
                                           help="API processes sharing the port (one Python process uses one core).")]
    = 1,
) -> None:
    """Run the API server (configured by HPO_DATABASE_URL)."""
    import uvicorn

    from hpo_service.api.app import create_app
    from hpo_service.api.startup import (
        freeze_startup_heap,
        limit_malloc_arenas,
        prepare_server,
        start_malloc_trimming,
    )
    from hpo_service.db.migrate import upgrade_if_needed
    from hpo_service.errors import SchemaOutdated
    from hpo_service.settings import Settings

    settings = Settings(database_url=database_url) if database_url else Settings()
    if migrate:
        upgrade_if_needed(settings.database_url)
    try:
        token_file = prepare_server(settings, host)
    except (SchemaOutdated, InvalidInput) as error:
        fail(error.message, EXIT_USAGE)
    if token_file is not None:
        console.print(f"created a local admin token: it is in {token_file} (the CLI reads it from there)")
    console.print(f"hpo-service on http://{host}:{port} (dashboard at /, API docs at /docs), database {_redact(settings.database_url)}")
    # Open dashboard pages hold a live-event stream; do not let them delay a shutdown for long.
    graceful_s = 5
    if processes == 1:
        limit_malloc_arenas()
        app = create_app(settings)
        freeze_startup_heap()
        start_malloc_trimming()
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful_s)
        return
    # Several processes: each builds its app from the environment (the protocol is safe with
    # any number of API processes on one database).
    os.environ["HPO_DATABASE_URL"] = settings.database_url
    uvicorn.run("hpo_service.api.startup:create_served_app", factory=True, workers=processes, host=host, port=port,
                log_level="warning", timeout_graceful_shutdown=graceful_s)


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrl = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema to the newest revision."""
    from hpo_service.db.migrate import upgrade
    from hpo_service.settings import Settings

    url = database_url or Settings().database_url
    upgrade(url, revision)
    console.print(f"database {_redact(url)} is at revision {revision}")


@db_app.command("bootstrap-token")
def db_bootstrap_token(
    database_url: DatabaseUrl = None,
    name: Annotated[str, typer.Option(help="A name for the token.")] = "bootstrap admin",
    out: Annotated[Path | None, typer.Option(help="Write the token to this file (mode 600) instead of printing it.")]
    = None,
    secret_env: Annotated[str | None, typer.Option(help="Use the secret in this environment variable (>= 32 chars).")]
    = None,
    if_none: Annotated[bool, typer.Option("--if-none", help="Do nothing when a token exists already.")] = False,
) -> None:
    """Create an admin token of the default project directly in the database (first set-up of a server)."""
    from hpo_service.api.startup import bootstrap_token, write_token_file
    from hpo_service.settings import Settings

    settings = Settings(database_url=database_url) if database_url else Settings()
    secret = os.environ.get(secret_env) if secret_env else None
    if secret_env and not secret:
        fail(f"--secret-env {secret_env}: the variable is not set", EXIT_USAGE)
    try:
        issued = bootstrap_token(settings, name, secret, if_none)
    except InvalidInput as error:
        fail(error.message, EXIT_USAGE)
    if issued is None:
        console.print("a token exists already; nothing to do")
        return
    if secret is not None:
        console.print(f"admin token {issued.token.prefix}… created from ${secret_env}")
    elif out is not None:
        write_token_file(out, issued.secret)
        console.print(f"admin token {issued.token.prefix}… written to {out}")
    else:
        typer.echo(issued.secret)


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema revision of the database and the newest one."""
    from hpo_service.db.engine import make_engine
    from hpo_service.db.migrate import current_revision, head_revision
    from hpo_service.settings import Settings

    engine = make_engine(database_url or Settings().database_url)
    try:
        typer.echo(f"current: {current_revision(engine)}  head: {head_revision()}")
    finally:
        engine.dispose()


# --- workers ---------------------------------------------------------------------------


@app.command()
def worker(
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Plain worker processes to run (without --ray-address).")
    ] = 1,
    study: Annotated[list[int] | None, typer.Option(help="Only lease trials of these study ids.")] = None,
    checkpoint_uri: Annotated[
        str | None, typer.Option(envvar="HPO_CHECKPOINT_URI", help="Where checkpoints go (file:///path).")
    ] = None,
    max_trials: Annotated[int | None, typer.Option(help="Exit after this many trial segments (per slot).")] = None,
    exit_when_idle: Annotated[bool, typer.Option(help="Exit when no work is offered.")] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", envvar="HPO_RAY_ADDRESS",
                     help="Run slots as Ray actors: 'local' starts Ray on this machine, 'auto' joins the "
                          "cluster of this node, host:port joins that cluster."),
    ] = None,
    slots: Annotated[
        int | None, typer.Option(min=1, max=4096, help="Ray actors to run (default: as many as fit the cluster).")
    ] = None,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(min=0.0, help="GPUs per Ray slot: 1 = a whole GPU, 0.25 packs four trials per GPU, "
                                   "0 = CPU slots (the default)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="Torch threads per plain worker process (default: the cores shared "
                                           "equally among --concurrency processes; all of them for one)."),
    ] = None,
) -> None:
    """Run workers: lease -> train -> report -> complete, in a loop.

    Without --ray-address: --concurrency plain processes. With it: a pool of Ray actors
    (--slots, --gpus-per-trial), and --concurrency must stay 1. SIGTERM / Ctrl-C drains
    (running trials are released as retryable); a second signal stops at once.
    """
    from hpo_service.settings import Settings
    from hpo_service.workers.process import WorkerOptions, run_workers
    from hpo_service.workers.ray_runtime import RayUnavailable, ray_options_from_cli, run_ray_workers

    try:
        ray_options = ray_options_from_cli(concurrency, ray_address, slots, gpus_per_trial, threads)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    options = WorkerOptions(
        server=server, checkpoint_uri=checkpoint_uri or Settings().checkpoint_uri, studies=study or None,
        max_trials=max_trials, exit_when_idle=exit_when_idle, token=token, threads=threads,
    )
    if ray_options is None:
        sys.exit(run_workers(options, concurrency))
    try:
        code = run_ray_workers(options, ray_options)
    except RayUnavailable as error:
        fail(str(error), EXIT_UNREACHABLE)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    sys.exit(code)


# --- studies ---------------------------------------------------------------------------


@study_app.command("create")
def study_create(
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, dir_okay=False, help="Spec (YAML or JSON).")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create a study from a spec file (the same name and spec again attaches to the existing study)."""
    try:
        spec = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        fail(f"{file} is not valid YAML/JSON: {error}", EXIT_USAGE)
    with _client(server, token) as client:
        study = _run(lambda: client.create_study(spec))
    if as_json:
        print_json(study)
    else:
        typer.echo(f"created study {study['id']} ({study['name']})")


@study_app.command("list")
def study_list(
    server: Server = DEFAULT_SERVER, token: Token = None, status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50, as_json: AsJson = False,
) -> None:
    """List studies, newest first."""
    with _client(server, token) as client:
        page = _run(lambda: client.list_studies(status=status, limit=limit))
    print_json(page) if as_json else render_studies(page["items"])


@study_app.command("show")
def study_show(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False) -> None:
    """Show a study: status, trials by state, best value, brackets and rungs."""
    with _client(server, token) as client:
        study = _run(lambda: client.find_study(ref))
        rungs = _run(lambda: client.rungs(study["id"]))
    if as_json:
        print_json({**study, "rungs": rungs})
    else:
        render_study(study)
        render_rungs(rungs)


@study_app.command("best")
def study_best(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False) -> None:
    """Show the best trial so far (best value at the highest budget reached)."""
    with _client(server, token) as client:
        best = _run(lambda: client.best_trial(client.find_study(ref)["id"]))
    print_json(best) if as_json else render_best(best)


@study_app.command("trials")
def study_trials(
    ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None,
    state: Annotated[str | None, typer.Option()] = None, bracket: Annotated[int | None, typer.Option()] = None,
    rung: Annotated[int | None, typer.Option()] = None, order: Annotated[str, typer.Option()] = "number",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50, offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: AsJson = False,
) -> None:
    """List a study's trials (paged, filtered)."""
    with _client(server, token) as client:
        study_id = _run(lambda: client.find_study(ref))["id"]
        page = _run(lambda: client.list_trials(study_id, state=state, bracket=bracket, rung=rung, order=order,
                                               limit=limit, offset=offset))
    print_json(page) if as_json else render_trials(page)


@study_app.command("decisions")
def study_decisions(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False) -> None:
    """The decision log: every promote / stop / requeue / fail with its reason."""
    with _client(server, token) as client:
        rows = _run(lambda: client.decisions(client.find_study(ref)["id"], limit=5000))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        trial = f"trial {row['trial_id']}" if row["trial_id"] else "study"
        typer.echo(f"{row['created_at'][:19]}  {row['kind']:<9} {trial:<12} {row['reason']}")


def _control(action: str) -> Any:
    def command(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False) -> None:
        with _client(server, token) as client:
            study = _run(lambda: client.control_study(client.find_study(ref)["id"], action))
        print_json(study) if as_json else typer.echo(f"study {study['id']} is {study['status']}")

    command.__doc__ = f"{action.capitalize()} a study."
    return command


@study_app.command("export-adapter")
def study_export_adapter(
    ref: StudyRef, out: Annotated[Path, typer.Option(help="Folder to write the adapter into.")],
    server: Server = DEFAULT_SERVER, token: Token = None,
) -> None:
    """Download the best trial's adapter: a folder that peft.PeftModel.from_pretrained loads."""
    from hpo_service.workers.artifacts import unpack_adapter_archive

    with _client(server, token) as client:
        data = _run(lambda: client.best_adapter(client.find_study(ref)["id"]))
    typer.echo(str(unpack_adapter_archive(data, out)))


@study_app.command("transfer")
def study_transfer(ref: StudyRef, server: Server = DEFAULT_SERVER, token: Token = None,
                   as_json: AsJson = False) -> None:
    """The stages and result of a mup_transfer study: transfer gap and tuning cost."""
    with _client(server, token) as client:
        report = _run(lambda: client.transfer(client.find_study(ref)["id"]))
    print_json(report) if as_json else render_transfer(report)


@study_app.command("extend")
def study_extend(
    ref: StudyRef,
    max_budget: Annotated[float, typer.Option(help="The new, larger max_budget.")],
    server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False,
) -> None:
    """Raise max_budget of a hyperband/asha study (iterative deepening): adds rungs, keeps the trials trained so far
    and tops Hyperband's brackets up to the larger Hyperband's sizes."""
    with _client(server, token) as client:
        study = _run(lambda: client.extend_study(client.find_study(ref)["id"], max_budget))
    if as_json:
        print_json(study)
    else:
        typer.echo(f"study {study['id']} extended to max_budget {max_budget:g}; it is {study['status']}")


for _action in ("pause", "resume", "cancel"):
    study_app.command(_action)(_control(_action))


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="What the token is for, e.g. 'ci' or 'gpu-workers'.")],
    scope: Annotated[str, typer.Option(help="admin | submit | worker | read")],
    project: Annotated[str | None, typer.Option(help="Project (default: the caller's).")] = None,
    expires_days: Annotated[float | None, typer.Option(help="Expire after this many days.")] = None,
    server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False,
) -> None:
    """Create a token; its secret is printed once and never stored."""
    with _client(server, token) as client:
        created = _run(lambda: client.create_token(name, scope, project=project, expires_days=expires_days))
    if as_json:
        print_json(created)
        return
    console.print(f"token {created['id']} ({created['scope']}, project {created['project']}); "
                  "store it now, it is not shown again:")
    typer.echo(created["token"])


@token_app.command("list")
def token_list(server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False) -> None:
    """List tokens (prefix, scope, expiry, last use); secrets are never shown."""
    with _client(server, token) as client:
        rows = _run(client.list_tokens)
    print_json(rows) if as_json else render_tokens(rows)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id (from `hpo token list`).")],
                 server: Server = DEFAULT_SERVER, token: Token = None, as_json: AsJson = False) -> None:
    """Revoke a token at once."""
    with _client(server, token) as client:
        row = _run(lambda: client.revoke_token(token_id))
    print_json(row) if as_json else typer.echo(f"token {row['id']} revoked")


@checkpoints_app.command("gc")
def checkpoints_gc(
    checkpoint_uri: Annotated[
        str | None, typer.Option(envvar="HPO_CHECKPOINT_URI", help="The store the workers write (file:///path).")
    ] = None,
    server: Server = DEFAULT_SERVER, token: Token = None,
    min_age: Annotated[float, typer.Option(min=0, help="Seconds: anything changed more recently is kept.")] = 3600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    """Delete checkpoint folders nothing refers to: scratch folders of slices that never finished, and
    commits the server refused (a worker that lost its lease). Run it where the store is mounted; the
    server says which checkpoints each trial still needs. Studies this token cannot see are left alone."""
    import time

    from hpo_service.settings import Settings
    from hpo_service.workers.checkpoint_gc import collect, server_references
    from hpo_service.workers.checkpoints import FileCheckpointStore, store_from_uri

    try:
        store = store_from_uri(checkpoint_uri or Settings().checkpoint_uri)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    if not isinstance(store, FileCheckpointStore):
        fail(f"{store.uri} is not a file:// store; only file stores can be collected", EXIT_USAGE)
    if not store.root.is_dir():
        fail(f"{store.root} does not exist (is the store mounted here?)", EXIT_USAGE)
    cutoff = time.time() - min_age  # taken before any reference is read: see checkpoint_gc

    def progress(study_id: int, trials: dict[int, Any] | None) -> None:
        said = "not shown to this token: left alone" if trials is None else f"{len(trials):,} trials' references read"
        console.print(f"study {study_id}: {said}", highlight=False)

    with _client(server, token) as client:
        result = _run(lambda: collect(store.root, server_references(client), cutoff, dry_run=dry_run,
                                      on_study=progress))
    rows = [{"path": str(path), "reason": reason, "bytes": size} for path, reason, size in result.deleted]
    if as_json:
        print_json({"dry_run": dry_run, "deleted": rows, "kept": result.kept, "freed_bytes": result.freed_bytes,
                    "studies_left_alone": sorted(result.hidden_studies)})
        return
    for row in rows:
        typer.echo(f"{'would delete' if dry_run else 'deleted'} {row['path']}: {row['reason']}")
    verb = "would free" if dry_run else "freed"
    typer.echo(f"{len(rows):,} folder{'' if len(rows) == 1 else 's'}, {verb} {result.freed_bytes / 1e6:,.1f} MB; "
               f"{result.kept:,} kept")
    if result.hidden_studies:
        typer.echo(f"left alone (not shown to this token): studies {', '.join(map(str, sorted(result.hidden_studies)))}")


@app.command()
def tune(
    file: Annotated[Path, typer.Option("-f", "--file", help="Study spec (YAML or JSON).")],
    server: Server = DEFAULT_SERVER, token: Token = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the study and gate on the result.")] = False,
    timeout: Annotated[str | None, typer.Option(help="Give up waiting after this long: 2h, 30m, 90s.")] = None,
    target: Annotated[list[str] | None, typer.Option(help="A check on the best trial, e.g. 'eval_loss<=2.1'.")]
    = None,
    baseline: Annotated[str | None, typer.Option(help="A study (id or name) whose best must be beaten.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the versioned JSON result here.")] = None,
    junit_out: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    export_adapter: Annotated[Path | None, typer.Option(help="Write the best trial's adapter into this folder.")]
    = None,
) -> None:
    """Submit a study (idempotently), wait, and gate CI on a target or a baseline. Exit codes: see README."""
    from hpo_service.tune_cli import run_tune

    sys.exit(run_tune(file=file, server=server, token=resolve_token(token), wait=wait, timeout=timeout,
                      targets=target or [], baseline=baseline, json_out=json_out, junit_out=junit_out,
                      export_adapter=export_adapter))


@app.command()
def demo(
    workers: Annotated[int, typer.Option(min=1, max=16, help="Local worker processes.")] = 3,
    port: Annotated[int, typer.Option(help="Port for the demo server (0 = any free port).")] = 0,
    keep: Annotated[bool, typer.Option(help="Keep the demo database from an earlier run.")] = False,
) -> None:
    """Run a small Hyperband study end to end on the embedded default (SQLite + local workers)."""
    from hpo_service.demo import run_demo

    sys.exit(run_demo(workers=workers, port=port, keep=keep))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    """Entry point; click's usage errors exit 64 (EX_USAGE), not 2, which `hpo tune` uses for a missed target."""
    try:  # typer >= 0.20 vendors click; older ones use click itself
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover
        from click.exceptions import UsageError  # type: ignore[assignment]

    try:
        # The click command itself: Typer's __call__ would print a traceback for a usage error.
        result = typer.main.get_command(app).main(prog_name="hpo", standalone_mode=False)
    except UsageError as error:
        error.show()
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()

"""muP transfer: tune the learning rate on narrow proxies, use it at the target width; SP alongside.

For each parametrization (SP, muP) and each width (the proxies, then the target) this trains
the ``mup_gpt`` decoder once per learning rate of a grid of powers of two, for a fixed number of
steps, and records the final held-out loss. It then reports

- the best learning rate per width (under muP it should stay put as the width grows; under SP
  it drifts down),
- the transfer gap at the target: the loss (and the distance in grid steps) between the
  learning rate picked on the widest proxy and the one tuned directly at the target,
- the tuning-cost ratio: the compute of the proxy sweeps over that of a sweep at the target
  (compute = 6 N D + 6 L T d D, N the non-embedding parameters including the readout, D the
  tokens; wall time is reported too).

The goal: muP transfers within one grid step of the target's own optimum at no more than 10%
of the compute of tuning at the target (Tensor Programs V reports 7% of one pretraining run for
GPT-3 6.7B). It writes ``bench/results/mup_transfer_<profile>.md`` and a PNG (final loss vs
learning rate, one line per width, SP and muP panels).

Profiles: ``cuda`` (the default; proxies 128 and 256, target 1024, about five minutes on one
H200) needs a CUDA device and prints "skipped: no CUDA device" and exits 0 without one.
``--device cpu --tiny`` runs the same pipeline at toy scale (proxies 32 and 64, target 256) in
about two minutes on two cores; at that scale transfer may or may not hold.

    python bench/mup_transfer.py                    # CUDA
    python bench/mup_transfer.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the root, on sys.path
    sys.path.insert(0, str(REPO_ROOT))

RESULTS = REPO_ROOT / "bench" / "results"
GOAL_GRID_STEPS = 1.0
GOAL_COST_RATIO = 0.10


@dataclass(frozen=True)
class Profile:
    name: str
    proxies: tuple[int, ...]
    target: int
    base_width: int
    depth: int
    head_dim: int
    seq_len: int
    batch_size: int
    steps: int
    log2_lrs: tuple[int, ...]
    warmup_fraction: float = 0.1
    readout_init: Literal["zero", "normal"] = "zero"
    eval_batches: int = 16
    corpus_max_bytes: int = 4_000_000


PROFILES = {
    "cuda": Profile("cuda", proxies=(128, 256), target=1024, base_width=256, depth=4, head_dim=64, seq_len=256,
                    batch_size=32, steps=300, log2_lrs=tuple(range(-14, -3))),
    "cpu_tiny": Profile("cpu_tiny", proxies=(32, 64), target=256, base_width=64, depth=2, head_dim=16, seq_len=32,
                        batch_size=8, steps=80, log2_lrs=tuple(range(-11, -3)), eval_batches=8,
                        corpus_max_bytes=1_000_000),
}


@dataclass(frozen=True)
class RunResult:
    parametrization: str
    width: int
    log2_lr: int
    eval_loss: float  # nan when the run diverged
    train_loss: float
    seconds: float
    flops: float


# --- analysis: pure, table-tested in tests/unit/mup_gpt/test_bench_mup_transfer.py --------------------


def best_log2_lr(losses: dict[int, float]) -> int | None:
    """The grid point with the lowest finite loss (ties: the smaller LR); None if every run diverged."""
    finite = {point: loss for point, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        return None
    return min(finite, key=lambda point: (finite[point], point))


def transfer_gap(proxy_losses: dict[int, float], target_losses: dict[int, float]) -> tuple[int | None, float, float]:
    """(LR picked on the proxy, its distance in grid steps from the target's best, the loss given up)."""
    picked, best = best_log2_lr(proxy_losses), best_log2_lr(target_losses)
    if picked is None or best is None:
        return picked, math.inf, math.inf
    loss = target_losses.get(picked, math.nan)
    lost = loss - target_losses[best] if math.isfinite(loss) else math.inf
    return picked, float(abs(picked - best)), lost


def training_flops(width: int, depth: int, mlp_ratio: int, seq_len: int, vocab: int, tokens: float) -> float:
    """6 N D + 6 L T d D (Kaplan et al. 2020): N = attention + MLP matrices + readout."""
    matrices = depth * (4 + 2 * mlp_ratio) * width * width + width * vocab
    return 6.0 * matrices * tokens + 6.0 * depth * seq_len * width * tokens


def cost_ratio(proxy_flops: float, target_flops: float) -> float:
    return proxy_flops / target_flops if target_flops > 0 else math.inf


# --- running ---------------------------------------------------------------------------------------


def run_one(profile: Profile, parametrization: str, width: int, log2_lr: int, device: str, cache_dir: str | None
            ) -> RunResult:
    from trainers.mup_gpt.config import MupGptConfig, TrialParams
    from trainers.mup_gpt.model import VOCAB_SIZE
    from trainers.mup_gpt.training import TrainingRun

    config = MupGptConfig(
        width=width, base_width=profile.base_width, depth=profile.depth, head_dim=profile.head_dim,
        seq_len=profile.seq_len, batch_size=profile.batch_size, parametrization=parametrization,
        readout_init=profile.readout_init,
        steps_per_unit=profile.steps, max_budget=1, eval_batches=profile.eval_batches,
        corpus_max_bytes=profile.corpus_max_bytes, cache_dir=cache_dir, device=device, seed=0,
    )
    params = TrialParams(learning_rate=2.0**log2_lr, warmup_fraction=profile.warmup_fraction)
    run = TrainingRun(config, params, seed=0)
    started = run.synchronize()
    for _ in range(profile.steps):
        run.train_step()
    train_loss = run.train_loss(reset=True)
    seconds = run.synchronize() - started
    eval_loss = run.evaluate() if math.isfinite(train_loss) else math.nan
    tokens = float(profile.steps * run.tokens_per_step)
    flops = training_flops(width, profile.depth, config.mlp_ratio, profile.seq_len, VOCAB_SIZE, tokens)
    return RunResult(parametrization, width, log2_lr, eval_loss, train_loss, seconds, flops)


def _print(result: RunResult) -> None:
    print(f"{result.parametrization:>3} width {result.width:>5} lr 2^{result.log2_lr:<4} "
          f"eval {result.eval_loss:7.4f} train {result.train_loss:7.4f} {result.seconds:6.1f}s", flush=True)


def _single_threaded() -> None:
    import torch

    torch.set_num_threads(1)


def run_all(profile: Profile, device: str, cache_dir: str | None, jobs: int = 1) -> list[RunResult]:
    """Every (width, parametrization, LR) run, in that order; ``jobs`` > 1 runs them in
    single-threaded worker processes (CPU only: toy models gain more from processes than threads)."""
    grid = [(parametrization, width, log2_lr) for width in (*profile.proxies, profile.target)
            for parametrization in ("sp", "mup") for log2_lr in profile.log2_lrs]
    if jobs <= 1:
        results = []
        for parametrization, width, log2_lr in grid:
            results.append(run_one(profile, parametrization, width, log2_lr, device, cache_dir))
            _print(results[-1])
        return results
    load_corpus_once(profile, cache_dir)  # built here, read by the workers
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_single_threaded) as pool:
        futures = [pool.submit(run_one, profile, parametrization, width, log2_lr, device, cache_dir)
                   for parametrization, width, log2_lr in grid]
        for future in as_completed(futures):
            _print(future.result())
        return [future.result() for future in futures]


def load_corpus_once(profile: Profile, cache_dir: str | None) -> None:
    from trainers.mup_gpt.config import MupGptConfig
    from trainers.mup_gpt.data import load_corpus

    load_corpus(MupGptConfig(max_budget=1, corpus_max_bytes=profile.corpus_max_bytes, cache_dir=cache_dir))


def losses_of(results: Sequence[RunResult], parametrization: str, width: int) -> dict[int, float]:
    return {r.log2_lr: r.eval_loss for r in results if r.parametrization == parametrization and r.width == width}


# --- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    parametrization: str
    best_by_width: dict[int, int | None]
    picked: int | None
    grid_steps: float
    loss_given_up: float
    flops_ratio: float
    seconds_ratio: float


def summarise(profile: Profile, results: Sequence[RunResult], parametrization: str) -> Summary:
    widths = (*profile.proxies, profile.target)
    best = {width: best_log2_lr(losses_of(results, parametrization, width)) for width in widths}
    picked, steps, lost = transfer_gap(losses_of(results, parametrization, max(profile.proxies)),
                                       losses_of(results, parametrization, profile.target))
    mine = [r for r in results if r.parametrization == parametrization]
    proxy = [r for r in mine if r.width in profile.proxies]
    target = [r for r in mine if r.width == profile.target]
    return Summary(
        parametrization, best, picked, steps, lost,
        cost_ratio(sum(r.flops for r in proxy), sum(r.flops for r in target)),
        cost_ratio(sum(r.seconds for r in proxy), sum(r.seconds for r in target)),
    )


def _lr(point: int | None) -> str:
    return "diverged" if point is None else f"2^{point} ({2.0**point:.3g})"


def summary_lines(profile: Profile, summaries: Sequence[Summary]) -> list[str]:
    widths = (*profile.proxies, profile.target)
    lines = ["| | " + " | ".join(f"best LR at width {w}" for w in widths)
             + " | LR from widest proxy | gap at target (grid steps) | loss given up | proxy/target compute"
             " | proxy/target time |",
             "| --- |" + " --- |" * (len(widths) + 5)]
    for s in summaries:
        lines.append(f"| {s.parametrization} | " + " | ".join(_lr(s.best_by_width[w]) for w in widths)
                     + f" | {_lr(s.picked)} | {s.grid_steps:g} | {s.loss_given_up:.4f} | {s.flops_ratio:.1%}"
                     f" | {s.seconds_ratio:.1%} |")
    return lines


def goal_line(summary: Summary) -> str:
    met = summary.grid_steps <= GOAL_GRID_STEPS and summary.flops_ratio <= GOAL_COST_RATIO
    return (f"Goal (muP within {GOAL_GRID_STEPS:g} grid step of the target's optimum at <= "
            f"{GOAL_COST_RATIO:.0%} of its tuning compute): {'met' if met else 'NOT met'} "
            f"({summary.grid_steps:g} grid steps, {summary.flops_ratio:.1%} compute).")


def loss_table(profile: Profile, results: Sequence[RunResult]) -> list[str]:
    lines = ["| parametrization | width | " + " | ".join(f"2^{p}" for p in profile.log2_lrs) + " |",
             "| --- | ---: |" + " ---: |" * len(profile.log2_lrs)]
    for parametrization in ("sp", "mup"):
        for width in (*profile.proxies, profile.target):
            losses = losses_of(results, parametrization, width)
            best = best_log2_lr(losses)
            cells = [("**{:.4f}**" if p == best else "{:.4f}").format(losses[p]) if math.isfinite(losses[p])
                     else "div." for p in profile.log2_lrs]
            lines.append(f"| {parametrization} | {width} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(path: Path, profile: Profile, device: str, jobs: int, command: str,
                   results: Sequence[RunResult], summaries: Sequence[Summary], seconds: float,
                   plot: Path | None) -> None:
    import torch

    device_name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or "cpu")
    text = [
        f"# muP transfer ({profile.name})", "",
        f"Generated by `bench/mup_transfer.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"the whole run took {seconds / 60:.1f} min.", "",
        f"Command: `{command}`", "",
        f"Model: byte-level GPT (`trainers/mup_gpt`), depth {profile.depth}, head size {profile.head_dim}, "
        f"sequence {profile.seq_len}, batch {profile.batch_size}, {profile.steps} AdamW steps per run (warmup "
        f"{profile.warmup_fraction:.0%}, cosine to 10%), no weight decay, one seed (0) for every run. muP base "
        f"width {profile.base_width}. Data: the stdlib corpus ({profile.corpus_max_bytes / 1e6:g} MB); the "
        f"objective is the final held-out loss (nats per byte) on {profile.eval_batches} batches.", "",
        f"Environment: torch {torch.__version__}, Python {platform.python_version()}, device {device} "
        f"({device_name}), {jobs} run(s) at a time"
        + (", each single-threaded" if jobs > 1 else "") + ".", "",
        "## Summary", "", *summary_lines(profile, summaries), "",
        goal_line(next(s for s in summaries if s.parametrization == "mup")), "",
        "Compute counts 6 N D + 6 L T d D per run; the proxy/target ratio compares the proxy sweeps with one "
        "sweep at the target (the final training run at the target is needed either way). Wall time of small "
        "models is dominated by per-step overhead, so their time ratio is far above their compute ratio.", "",
        "## Final held-out loss per learning rate", "", *loss_table(profile, results), "",
        "Bold: the best learning rate of the row; div.: diverged (non-finite loss).", "",
    ]
    if plot is not None:
        text += [f"![loss vs learning rate]({plot.name})", ""]
    path.write_text("\n".join(text), encoding="utf-8")


def write_plot(path: Path, profile: Profile, results: Sequence[RunResult]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    finite = [r.eval_loss for r in results if math.isfinite(r.eval_loss)]
    for axis, parametrization in zip(axes, ("sp", "mup"), strict=True):
        for width in (*profile.proxies, profile.target):
            losses = losses_of(results, parametrization, width)
            points = [p for p in profile.log2_lrs if math.isfinite(losses[p])]
            axis.plot(points, [losses[p] for p in points], marker="o", label=f"width {width}")
        axis.set_title({"sp": "SP", "mup": f"muP (base width {profile.base_width})"}[parametrization])
        axis.set_xlabel("log2 learning rate")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"held-out loss after {profile.steps} steps")
    if finite:
        low = min(finite)
        axes[0].set_ylim(low - 0.05, min(max(finite), low + 1.5) + 0.05)
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--tiny", action="store_true", help="toy scale (CPU: about two minutes)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: the profile's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .png")
    parser.add_argument("--cache-dir", help="corpus cache (default: $HPO_CACHE_DIR or a temp dir)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: 1 with --tiny on the CPU)")
    parser.add_argument("--jobs", type=int, help="parallel runs on the CPU (default: the CPU count; CUDA: 1)")
    parser.add_argument("--readout-init", choices=["zero", "normal"], default="zero",
                        help="muP readout init (trainer config readout_init); normal adds a suffix to the files")
    args = parser.parse_args(argv)
    if args.device == "cpu" and not args.tiny:
        parser.error("the full benchmark needs a CUDA device; on the CPU use --tiny")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    device = "cpu" if args.device == "cpu" else "cuda"
    threads = args.threads or (1 if device == "cpu" else None)  # toy models: threads cost more than they give
    if threads:
        torch.set_num_threads(threads)
    profile = PROFILES["cpu_tiny" if args.tiny else "cuda"]
    if args.tiny and device == "cuda":
        profile = replace(profile, name="cuda_tiny")
    if args.steps:
        profile = replace(profile, steps=args.steps)
    if args.readout_init != "zero":
        profile = replace(profile, name=f"{profile.name}_readout_{args.readout_init}",
                          readout_init=cast(Literal["zero", "normal"], args.readout_init))
    started = time.perf_counter()
    jobs = 1 if device == "cuda" else (args.jobs or len(os.sched_getaffinity(0)))
    results = run_all(profile, device, args.cache_dir, jobs)
    summaries = [summarise(profile, results, parametrization) for parametrization in ("sp", "mup")]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"mup_transfer_{profile.name}"
    plot = write_plot(args.out / f"{stem}.png", profile, results)
    command = "python bench/mup_transfer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_markdown(args.out / f"{stem}.md", profile, device, jobs, command.strip(), results, summaries,
                   time.perf_counter() - started, plot)
    print("\n".join(["", *summary_lines(profile, summaries), "",
                     goal_line(next(s for s in summaries if s.parametrization == "mup")),
                     f"wrote {args.out / f'{stem}.md'}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

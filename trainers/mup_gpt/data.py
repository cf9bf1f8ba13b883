"""A byte-level corpus from text that ships with Python, with a held-out split, and its batches.

``stdlib``: ``pydoc_data.topics`` plus the standard library's ``.py`` sources (without
``site-packages`` and test folders), taken whole in a fixed pseudo-random order
(crc32 of the relative path, so the sample spans the alphabet) until ``corpus_max_bytes``.
Each document goes entirely to train or to eval, by crc32 of its name, so held-out text is
never a neighbour of training text. Documents are separated by a NUL byte.

The split is cached under ``cache_dir`` (``$HPO_CACHE_DIR``, else the temp dir), keyed by the
Python version and the settings, written atomically; ``digest`` (sha256 of both splits) goes
into checkpoints so a resume on a host whose corpus differs is refused rather than silently
continued on other data. Building it reads ~12 MB of sources once (about a second).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from trainers.mup_gpt.config import MupGptConfig

CORPUS_FORMAT = 1
SEPARATOR = b"\0"
_FULL_ENOUGH = 4096  # stop reading sources once less room than this is left
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8, 1-D
    eval: torch.Tensor  # uint8, 1-D
    digest: str


def stdlib_documents() -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of pydoc_data.topics and then every eligible stdlib source, in a fixed order."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield f"pydoc_data.topics/{key}", topics[key].encode("utf-8")
    root = Path(sysconfig.get_paths()["stdlib"])
    names = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if not _EXCLUDED_DIRS.intersection(path.relative_to(root).parts)
    )
    names.sort(key=lambda name: (zlib.crc32(name.encode("utf-8")), name))
    for name in names:
        yield name, (root / name).read_bytes()


def is_eval_document(name: str, eval_fraction: float) -> bool:
    return zlib.crc32(f"eval:{name}".encode("utf-8")) % 10_000 < eval_fraction * 10_000


def split_documents(
    documents: Iterable[tuple[str, bytes]], max_bytes: int, eval_fraction: float
) -> tuple[bytes, bytes]:
    """Whole documents into (train, eval) until ``max_bytes``; eval gets at least one document."""
    train: list[bytes] = []
    held_out: list[bytes] = []
    total = 0
    for name, content in documents:
        if max_bytes - total < _FULL_ENOUGH:
            break
        if total + len(content) > max_bytes:
            continue  # a smaller document further on may still fit
        (held_out if is_eval_document(name, eval_fraction) else train).append(content)
        total += len(content) + len(SEPARATOR)
    if not held_out and len(train) > 1:
        held_out.append(train.pop())
    if not train or not held_out:
        raise ValueError(f"corpus_max_bytes={max_bytes} leaves no document for train or eval")
    return SEPARATOR.join(train), SEPARATOR.join(held_out)


def cache_root(config: MupGptConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir)
    return Path(os.environ.get("HPO_CACHE_DIR") or Path(tempfile.gettempdir()) / "hpo-service-cache") / "mup_gpt"


def load_corpus(config: MupGptConfig) -> Corpus:
    """The train/eval split for ``config``, from the cache when it is there (memoised per process)."""
    return _load(str(cache_root(config)), config.corpus, config.corpus_path, config.corpus_max_bytes,
                 config.eval_fraction)


@lru_cache(maxsize=4)
def _load(root: str, kind: str, path: str | None, max_bytes: int, eval_fraction: float) -> Corpus:
    if kind == "file":
        assert path is not None  # MupGptConfig checks it
        train, held_out = _split_file(Path(path), max_bytes, eval_fraction)
    else:
        train, held_out = _cached_stdlib(Path(root), max_bytes, eval_fraction)
    digest = hashlib.sha256(hashlib.sha256(train).digest() + hashlib.sha256(held_out).digest()).hexdigest()
    return Corpus(_as_tensor(train), _as_tensor(held_out), digest)


def _split_file(path: Path, max_bytes: int, eval_fraction: float) -> tuple[bytes, bytes]:
    """A single file: the last ``eval_fraction`` of its (first ``max_bytes``) bytes is held out."""
    try:
        data = path.read_bytes()[:max_bytes]
    except OSError as exc:
        raise ValueError(f"corpus_path {path}: cannot be read ({exc.strerror or exc})") from exc
    cut = len(data) - max(1, int(len(data) * eval_fraction))
    if cut < 1:
        raise ValueError(f"{path} is too small to split into train and eval")
    return data[:cut], data[cut:]


def _cached_stdlib(root: Path, max_bytes: int, eval_fraction: float) -> tuple[bytes, bytes]:
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    key = hashlib.sha256(json.dumps(
        [CORPUS_FORMAT, version, sysconfig.get_paths()["stdlib"], max_bytes, eval_fraction]
    ).encode()).hexdigest()[:16]
    folder = root / f"stdlib-{version}-{key}"
    train_path, eval_path = folder / "train.bin", folder / "eval.bin"
    if train_path.is_file() and eval_path.is_file():
        return train_path.read_bytes(), eval_path.read_bytes()
    train, held_out = split_documents(stdlib_documents(), max_bytes, eval_fraction)
    folder.mkdir(parents=True, exist_ok=True)
    for target, content in ((train_path, train), (eval_path, held_out)):
        # Concurrent workers may build the same cache: each writes its own file, then renames.
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_bytes(content)
        os.replace(partial, target)
    return train, held_out


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def sample_windows(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``seq_len + 1`` bytes (int64, on ``data``'s device)."""
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=generator)
    return _gather(data, starts.to(data.device), seq_len)


def eval_windows(data: torch.Tensor, count: int, seq_len: int) -> torch.Tensor:
    """``count`` windows evenly spread over ``data``: the same for every trial and every report."""
    last = data.numel() - seq_len - 1
    if last < 0:
        raise ValueError(f"held-out split ({data.numel()} bytes) is shorter than seq_len + 1")
    starts = torch.linspace(0, last, count, dtype=torch.float64).round().long()
    return _gather(data, starts.to(data.device), seq_len)


def _gather(data: torch.Tensor, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
    offsets = torch.arange(seq_len + 1, device=data.device)
    return data[starts[:, None] + offsets[None, :]].long()

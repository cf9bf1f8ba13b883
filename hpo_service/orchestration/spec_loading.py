"""Turn a submitted spec into a complete, checked one before it is stored.

Checks that need more than the spec itself live here: named search spaces are
read from `search_spaces/`, the trainer must be registered and accept its fixed
params and report the objective metric, and the scheduler must accept the limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from hpo_service.domain.space import Distribution
from hpo_service.domain.spec import StudySpec
from hpo_service.errors import InvalidInput
from hpo_service.sampling.proposer import ensure_sampler_available
from hpo_service.scheduling.factory import make_scheduler
from hpo_service.workers.registry import UnknownTrainer, load_trainer

_SPACE = TypeAdapter(dict[str, Distribution])


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        parts.append(f"{location + ': ' if location else ''}{str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_spec(raw: Any) -> StudySpec:
    if not isinstance(raw, dict):
        raise InvalidInput("the study spec must be a mapping (YAML or JSON object)")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as error:
        raise InvalidInput(f"invalid study spec: {format_validation_error(error)}") from error


def load_named_space(name: str, directory: Path) -> dict[str, Any]:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
        raise InvalidInput(
            f"search_space: no search space named {name!r}; known: {', '.join(known) or 'none'}"
        )
    data = yaml.safe_load(path.read_text())
    space = data.get("parameters", data) if isinstance(data, dict) else data
    try:
        return _SPACE.dump_python(_SPACE.validate_python(space), mode="json")
    except ValidationError as error:
        raise InvalidInput(f"search space file {path.name}: {format_validation_error(error)}") from error


def resolve_spec(spec: StudySpec, search_space_dir: Path) -> StudySpec:
    """Return the spec with its search space inline, after every cross-field check."""
    if isinstance(spec.search_space, str):
        inline = load_named_space(spec.search_space, search_space_dir)
        spec = StudySpec.model_validate({**spec.model_dump(mode="json"), "search_space": inline})
    _check_trainer(spec)
    ensure_sampler_available(spec.sampler.kind)  # e.g. gp needs torch: say so now, not at the first lease
    try:
        make_scheduler(spec.scheduler, spec.limits)
    except ValueError as error:
        raise InvalidInput(f"scheduler: {error}") from error
    return spec


def _check_trainer(spec: StudySpec) -> None:
    try:
        trainer = load_trainer(spec.trainer.name)
    except UnknownTrainer as error:
        raise InvalidInput(f"trainer.name: {error}") from error
    try:
        trainer.config_model.model_validate(spec.trainer.params)
    except ValidationError as error:
        raise InvalidInput(
            f"invalid params for trainer {trainer.name!r}: {format_validation_error(error, 'trainer.params')}"
        ) from error
    transfer = spec.scheduler.transfer
    if transfer is not None:
        axes = getattr(trainer, "transfer_axes", ("width",) if trainer.supports_mup else ())
        if transfer.axis not in axes:
            raise InvalidInput(
                f"scheduler.transfer: trainer {trainer.name!r} does not declare {transfer.axis} transfer "
                f"(muP support); it declares: {', '.join(axes) or 'none'}. Use a trainer that does, e.g. mup_gpt"
            )
        if transfer.check is not None and transfer.check.param not in spec.space:
            raise InvalidInput(f"scheduler.transfer.check.param: {transfer.check.param!r} is not in the search space")
    if spec.objective.metric not in trainer.metrics:
        raise InvalidInput(
            f"objective.metric: trainer {trainer.name!r} does not report {spec.objective.metric!r}; "
            f"it reports: {', '.join(trainer.metrics)}"
        )

"""Fixed settings of the synthetic trainer (a study's ``trainer.params``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SyntheticConfig(BaseModel):
    # extra=forbid: a typo such as "sleep_per_unti" must fail study creation, not be ignored.
    # allow_inf_nan=False: an infinite sleep or NaN noise is never what anyone meant.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sleep_per_unit: float = Field(
        default=0.0, ge=0.0, description="Seconds slept per budget unit, to emulate training time."
    )
    noise: float = Field(
        default=0.01, ge=0.0, description="Standard deviation of the Gaussian noise on the loss."
    )
    report_every: float = Field(
        default=1.0, gt=0.0, description="Budget units between reports (positions k * report_every)."
    )
    fail_probability: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Chance per slice of a retryable RuntimeError, drawn from seed and budget.",
    )
    optimum: dict[str, float] = Field(
        default_factory=dict,
        description="Target value per numeric param; see trainers.synthetic.curves for defaults.",
    )

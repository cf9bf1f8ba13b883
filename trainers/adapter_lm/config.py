"""Fixed settings of the ``adapter_lm`` trainer (a study's ``trainer.params``).

Everything that is the same for every trial of a study lives here: the base model, the
data, sequence length and batch size, how budget units map to optimizer steps, and the
performance switches. What the study searches over (learning rate, rank, ...) arrives per
trial in ``TrainRequest.params``; see ``params.py`` and the ``adapters`` package.

Budget units
------------
``budget_unit: epochs`` (default): one budget unit is one pass over the training split,
i.e. ``steps_per_epoch = n_train_sequences // (batch_size * grad_accum_steps)`` optimizer
steps (the last partial batch is dropped, so every epoch has the same steps).
``budget_unit: steps``: one budget unit is one optimizer step. A fractional budget is
rounded down to whole steps, the same way on every slice, so slices meet exactly.

``max_budget`` must be the study's ``scheduler.max_budget``: the learning-rate schedule and
the rank schedules of AdaLoRA and dynamic-rank LoRA are laid out over it, and a rung is a
prefix of that one schedule (see docs/adapters.md). The trainer cannot read the study spec,
so it is repeated here; a worker that passes ``extra["max_budget"]`` gets it cross-checked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AdapterKind = Literal[
    "lora", "dora", "lokr", "loha", "adalora", "vera", "randlora", "oft", "krona", "dynamic_rank", "ether"
]
PEFT_KINDS: frozenset[str] = frozenset({"lora", "dora", "lokr", "loha", "adalora", "vera", "randlora", "oft"})
CUSTOM_KINDS: frozenset[str] = frozenset({"krona", "dynamic_rank", "ether"})


class AdapterLMConfig(BaseModel):
    # extra=forbid: a typo such as "seq_lenght" must fail study creation, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field(min_length=1, description="Local folder, or a hub name resolved from the local cache.")
    tokenizer: str | None = Field(default=None, description="Defaults to `model`.")
    data_files: list[str] = Field(min_length=1, description="Local .txt / .jsonl files.")
    text_field: str = Field(default="text", description="JSONL key of plain-text records.")
    prompt_field: str = Field(default="instruction", description="JSONL key of the instruction.")
    input_field: str = Field(default="input", description="Optional JSONL key of extra instruction input.")
    response_field: str = Field(default="response", description="JSONL key of the response.")
    train_on_prompt: bool = Field(default=False, description="Also compute the loss on instruction tokens.")
    seq_len: int = Field(default=1024, ge=8, le=1 << 17)
    batch_size: int = Field(default=8, ge=1, le=4096, description="Sequences per micro-batch.")
    grad_accum_steps: int = Field(default=1, ge=1, le=1024)
    eval_fraction: float = Field(default=0.05, gt=0.0, le=0.5)
    eval_max_batches: int | None = Field(default=None, ge=1, description="Cap on eval batches per report.")
    data_seed: int = Field(default=0, ge=0, description="Seeds the train/eval split: equal for all trials.")
    adapter: AdapterKind = Field(default="lora", description="Adapter kind; a trial param `adapter` overrides.")
    budget_unit: Literal["epochs", "steps"] = "epochs"
    max_budget: float = Field(gt=0, description="The study's scheduler.max_budget (schedules span it).")
    report_every: int = Field(default=10, ge=1, description="Optimizer steps between reports.")
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(default=1e-8, gt=0.0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="bf16: frozen base weights in bf16, adapters in fp32, bf16 autocast. auto: bf16 on CUDA.",
    )
    compile: bool | None = Field(default=None, description="torch.compile the forward; None: on CUDA only.")
    fused_optimizer: bool | None = Field(default=None, description="Fused AdamW; None: on CUDA only.")
    attention: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    gradient_checkpointing: bool = False
    chunked_loss: bool = Field(default=True, description="Cross-entropy in chunks, never all fp32 logits.")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("data_files")
    @classmethod
    def _check_files(cls, files: list[str]) -> list[str]:
        for path in files:
            if not path.endswith((".txt", ".jsonl")):
                raise ValueError(f"data file {path!r}: only .txt and .jsonl files are read")
        return files

    @field_validator("adam_betas")
    @classmethod
    def _check_betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"adam_betas must lie in [0, 1), got {betas}")
        return betas

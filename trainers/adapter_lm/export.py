"""Exporting a trial's adapter, and loading an exported adapter onto a base model.

Every checkpoint carries ``export/``, written when the checkpoint is, so exporting needs
neither the base model nor a GPU: ``export_adapter`` verifies the checkpoint and copies it.

- PEFT kinds (lora, dora, lokr, loha, adalora, vera, randlora, oft): the folder is what
  ``PeftModel.save_pretrained`` writes, so ``peft.PeftModel.from_pretrained(base, out_dir)``
  loads it, and so does any PEFT-aware tool.
- Our kinds (krona, dynamic_rank, ether): PEFT has no class for them, so the folder holds
  ``adapter_config.json`` with ``"format": "hpo_service.adapter_lm/1"`` (kind, target
  modules, constructor options, base model) and ``adapter_model.safetensors`` (the adapter
  tensors by module name). ``load_adapter(base_model, out_dir)`` loads either kind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hpo_service.workers.trainer import CheckpointError
from trainers.adapter_lm.layout import EXPORT_DIR, read_payload, verified_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CUSTOM_FORMAT = "hpo_service.adapter_lm/1"


def export_adapter(checkpoint_dir: Path, out_dir: Path) -> Path:
    """Write the adapter of the checkpoint in ``checkpoint_dir`` to ``out_dir`` and return it.

    Only the files that ``state.json`` records for ``export/`` are copied, each after its
    sha256 is checked, and only plain files: a symlink planted in a checkpoint could otherwise
    make the server copy any file it can read. Needs no torch (the API server calls it).
    Raises FileExistsError when ``out_dir`` exists and is not an empty folder (an export never
    overwrites), and CheckpointError when the folder is not a complete adapter_lm checkpoint.
    """
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} is not an empty folder; export into a new one")
    payload = read_payload(checkpoint_dir)
    source = checkpoint_dir / EXPORT_DIR
    digests = payload.get("export_files")
    if source.is_symlink() or not isinstance(digests, dict) or ADAPTER_CONFIG not in digests:
        raise CheckpointError(f"{checkpoint_dir}: not a complete adapter_lm checkpoint (no {EXPORT_DIR}/)")
    files = [verified_file(source, name, digests) for name in sorted(digests)]
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, out_dir / path.name)
    return out_dir


def is_custom_export(directory: Path) -> bool:
    config = json.loads((Path(directory) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return isinstance(config, dict) and config.get("format") == CUSTOM_FORMAT


def load_adapter(base_model: Any, directory: Path) -> Any:
    """``base_model`` with the exported adapter in ``directory`` applied (in place for our kinds).

    PEFT exports come back as a ``PeftModel``; ours as the base model with the adapter
    layers injected. Both are in eval mode, ready for inference or merging.
    """
    directory = Path(directory)
    if not is_custom_export(directory):
        import peft

        from trainers.adapter_lm.adapters.peft_adapters import quiet_peft

        with quiet_peft():
            return peft.PeftModel.from_pretrained(base_model, str(directory)).eval()
    from safetensors.torch import load_file

    from trainers.adapter_lm.adapters import inject_custom, load_adapter_state_dict

    config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    model = inject_custom(config["adapter"], base_model, list(config["target_modules"]), dict(config["options"]))
    load_adapter_state_dict(model, load_file(str(directory / ADAPTER_WEIGHTS)))
    return model.eval()

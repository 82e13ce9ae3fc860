"""`ecr export`: turn a training checkpoint into Hugging Face artefacts.

A stage checkpoint holds the policy configuration (`hyper_parameters["policy"]`) and only the trained tensors
under the module's `model.` prefix. Export rebuilds the policy from its configuration (base weights from
`policy.model`, offline), loads those tensors with a strict check, and writes
- `OUT/adapter/`: the LoRA adapter in PEFT format (+ processor), loadable with `PeftModel.from_pretrained`
  or as `policy.adapter` of a later stage (e.g. GRPO starting from SFT);
- with `merge=True`, `OUT/merged/`: a plain model folder with the adapter folded into unquantised weights
  (+ processor), loadable without peft. A full fine-tune (no LoRA) is always written as `OUT/merged/`.

Each folder is written atomically (`ecr.errors.atomic_output`): a full disk leaves no half-written folder that
looks like a model, and is one line naming the folder (`OutputWriteError`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ecr.errors import ConfigError, atomic_output
from ecr.models import PolicyBackbone, build_backbone
from ecr.modules.checkpointing import read_checkpoint, resolve_checkpoint


def load_trained_policy(checkpoint: str | Path, **overrides: Any) -> PolicyBackbone:
    """The checkpoint's policy, loaded (base weights + trained tensors). `overrides` replace config fields."""
    config, state = read_checkpoint(checkpoint)
    config = dataclasses.replace(config, **overrides) if overrides else config
    backbone = build_backbone(config)
    model = backbone.load()
    expected = set(backbone.trainable_parameter_names())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ConfigError(
            f"{checkpoint}: trained tensors do not match the policy (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    model.load_state_dict(state, strict=False)
    return backbone


def export_policy(checkpoint: str | Path, out: str | Path, *, merge: bool = False) -> dict[str, Path]:
    """Write the adapter (PEFT format) and, if `merge`, a merged HF model folder. Returns the folders."""
    out = Path(out)
    backbone = load_trained_policy(checkpoint)
    written: dict[str, Path] = {}
    if not hasattr(backbone.model, "peft_config"):  # full fine-tune: the model itself is the export
        with atomic_output(out / "merged", folder=True) as tmp:
            backbone.save_pretrained(tmp)
        written["merged"] = out / "merged"
        return written
    with atomic_output(out / "adapter", folder=True) as tmp:
        backbone.save_pretrained(tmp)
    written["adapter"] = out / "adapter"
    if merge:
        # Fold the adapter into unquantised weights: an 8/4-bit base cannot hold the merged update exactly.
        unquantised = dataclasses.replace(backbone.config, quantization="none", adapter=str(written["adapter"]))
        merged = build_backbone(unquantised)
        merged.load()
        with atomic_output(out / "merged", folder=True) as tmp:
            merged.save_pretrained(tmp, merged=True)
        written["merged"] = out / "merged"
    return written


def export_command(checkpoint: Path, out: Path, merge: bool = False) -> int:
    """Export a stage checkpoint: LoRA adapter in PEFT format (+ processor) and optionally a merged model.

    Args:
        checkpoint: Lightning checkpoint written by `ecr fit` (SFT or GRPO), or its run folder (e.g. runs/sft/tb,
            or runs/sft/tb/last): the newest version folder that holds a checkpoint, its last.ckpt.
        out: Output folder; receives adapter/ and, with --merge, merged/.
        merge: Also write a plain HF model folder with the adapter merged into the base weights.
    """
    resolved = resolve_checkpoint(checkpoint)
    if resolved != checkpoint:
        print(f"checkpoint: {resolved}")
    written = export_policy(resolved, out, merge=merge)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0

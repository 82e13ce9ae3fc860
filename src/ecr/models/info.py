"""`ecr model info`: parameters and training memory of a policy, from its architecture alone (meta device).

The model is built on the meta device (no weights read, no memory used) from a preset's config values
(`ecr.models.presets`) or a folder's `config.json`. Each parameter is attributed to a part (towers, projectors,
language model, head), the LoRA adapter the policy would get is attached with peft itself (same target modules
as `ecr`'s `PolicyConfig` through the family's backbone), and the memory of weights, gradients and AdamW states
follows from the rules of `ecr.models.memory` (pure functions, tested against hand calculations; activations,
the CUDA context and temporary buffers are NOT included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecr.errors import ConfigError
from ecr.models.config import LoraSettings, PolicyConfig
from ecr.models.memory import (
    DTYPE_BYTES,
    LORA_BYTES,
    Memory,
    int8_weight_bytes,
    nf4_weight_bytes,
    optimizer_bytes,
    per_gpu,
)
from ecr.models.skeleton import (
    MODEL_TYPES,
    ModelSource,
    build_skeleton,
    family_backbone,
    family_of,
    model_source,
    read_config_json,
)
from ecr.rows import markdown_table

__all__ = [
    "DTYPE_BYTES",
    "LORA_BYTES",
    "MODEL_TYPES",
    "PARTS",
    "Memory",
    "ModelCensus",
    "ModelSource",
    "PartCensus",
    "build_skeleton",
    "family_backbone",
    "family_of",
    "format_census",
    "info_command",
    "int8_weight_bytes",
    "lora_formula",
    "model_census",
    "model_source",
    "nf4_weight_bytes",
    "optimizer_bytes",
    "per_gpu",
    "read_config_json",
]

Quantization = Literal["none", "8bit", "4bit"]
WeightDtype = Literal["bfloat16", "float16", "float32"]

DEFAULT_LORA = LoraSettings()  # `PolicyConfig`'s default adapter (never mutated)

# Parts of each family: module-name prefix -> part (the longest matching prefix wins; unmatched = "other").
PARTS: dict[str, dict[str, str]] = {
    "qwen2_5_omni": {
        "model.visual": "vision tower",
        "model.visual.merger": "vision projector",
        "model.audio_tower": "audio tower",
        "model.audio_tower.proj": "audio projector",
        "model.language_model": "language model",
        "lm_head": "LM head",
    },
    "humanomni": {
        "model": "language model",
        "model.vision_tower": "vision tower",
        "model.mm_projector": "vision projector",
        "model.feature_compressor": "vision projector",
        "model.audio_tower": "audio tower",
        "model.audio_projector": "audio projector",
        "model.bert_model": "router (BERT)",
        "model.bert_gate": "router gate",
        "lm_head": "LM head",
    },
}
PART_ORDER = (
    "vision tower",
    "vision projector",
    "audio tower",
    "audio projector",
    "router (BERT)",
    "router gate",
    "language model",
    "LM head",
    "other",
)


# ------------------------------------------------------------------------------------------- the census
@dataclass(frozen=True)
class PartCensus:
    """Parameters of one part of the model and their weight memory."""

    name: str
    parameters: int = 0
    trainable: int = 0
    weight_bytes: int = 0
    quantized: int = 0  # parameters stored quantised


@dataclass
class ModelCensus:
    """What `ecr model info` prints: parts, trainable parameters and the memory of one training replica."""

    source: ModelSource
    dtype: str
    quantization: str
    lora: LoraSettings
    lora_targets: str | list[str]
    tied_head: bool
    parts: list[PartCensus] = field(default_factory=list)
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0

    @property
    def parameters(self) -> int:
        return sum(p.parameters for p in self.parts)

    @property
    def trainable(self) -> int:
        return sum(p.trainable for p in self.parts)

    @property
    def memory(self) -> Memory:
        return Memory(sum(p.weight_bytes for p in self.parts), self.gradient_bytes, self.optimizer_state_bytes)


def part_of(name: str, rules: dict[str, str]) -> str:
    """The part of parameter/module `name`: its longest matching module prefix in `rules`."""
    best, part = -1, "other"
    for prefix, label in rules.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, part = len(prefix), label
    return part


def lora_formula(model: Any, targets: str | list[str], r: int) -> int:
    """LoRA parameters by the formula r·(in + out) per targeted Linear (peft's own name matching)."""
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(r=r, target_modules=targets)
    return sum(
        r * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and check_target_module_exists(config, name)
    )


def model_census(
    model: str | Path | ModelSource,
    *,
    quantization: Quantization = "none",
    dtype: WeightDtype = "bfloat16",
    lora: LoraSettings | None = None,
) -> ModelCensus:
    """Count the parameters of each part, the trainable ones and the weight bytes, on the meta device.

    With `lora.enabled`, the adapter is attached by peft exactly as `ecr` attaches it (the backbone's target
    modules unless `lora.target_modules` is set); without LoRA the language model and head are trained fully
    (towers frozen, `ecr`'s default) and quantisation is refused, as `PolicyConfig` refuses it.
    """
    lora = lora or LoraSettings()
    if isinstance(lora, dict):
        lora = LoraSettings(**lora)
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"--dtype: {dtype!r} is not one of {sorted(DTYPE_BYTES)}")
    if quantization not in ("none", "8bit", "4bit"):
        raise ConfigError(f"--quantization: {quantization!r} is not none, 8bit or 4bit")
    source = model if isinstance(model, ModelSource) else model_source(model)
    policy = PolicyConfig(
        backbone=source.family, model=source.origin, dtype=dtype, quantization=quantization, lora=lora
    )
    backbone = family_backbone(source, policy)
    skeleton = build_skeleton(source)
    head, embed = skeleton.get_output_embeddings(), skeleton.get_input_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight
    quantized_rows = _quantized_rows(skeleton, backbone) if quantization != "none" else {}
    targets = backbone.lora_targets()
    named = _trained_parameters(skeleton, backbone, lora, targets, source.origin)
    parts, grads, states = _tally(named, PARTS[source.family], quantized_rows, quantization, DTYPE_BYTES[dtype])
    return ModelCensus(
        source=source,
        dtype=dtype,
        quantization=quantization,
        lora=lora,
        lora_targets=targets,
        tied_head=tied,
        parts=parts,
        gradient_bytes=grads,
        optimizer_state_bytes=states,
    )


def _quantized_rows(skeleton: Any, backbone: Any) -> dict[str, int]:
    """Weight name -> output rows of the Linear weights bitsandbytes would quantise (transformers' own rule,
    with the backbone's and the model's skips)."""
    import torch
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = list(backbone._skip_quantization()) + list(getattr(skeleton, "_keep_in_fp32_modules", None) or [])
    return {
        f"{name}.weight": module.out_features
        for name, module in skeleton.named_modules()
        if isinstance(module, torch.nn.Linear) and should_convert_module(name, skip)
    }


def _trained_parameters(
    skeleton: Any, backbone: Any, lora: LoraSettings, targets: str | list[str], origin: str
) -> list[tuple[str, Any]]:
    """(name, parameter) of the model as `ecr` trains it, `requires_grad` set as training would set it."""
    if lora.enabled:  # as `HFBackbone._adapt`: peft freezes the base, trains adapters and modules_to_save copies
        from peft import LoraConfig, get_peft_model

        to_save = list(lora.modules_to_save) + backbone.trainable_towers() or None
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, target_modules=targets, lora_dropout=0.0, modules_to_save=to_save
        )
        named = list(get_peft_model(skeleton, config).get_base_model().named_parameters())
        if not any(".lora_" in n for n, _ in named):
            raise ConfigError(f"--lora.target_modules={targets!r} matched no module of {origin}")
        return named
    # as `HFBackbone.load`: everything trains except the frozen towers
    skeleton.requires_grad_(True)
    for prefix in backbone.frozen_towers():
        skeleton.get_submodule(prefix).requires_grad_(False)
    return list(skeleton.named_parameters())


def _tally(
    named: list[tuple[str, Any]],
    rules: dict[str, str],
    quantized_rows: dict[str, int],
    quantization: str,
    dtype_bytes: int,
) -> tuple[list[PartCensus], int, int]:
    """(parts in `PART_ORDER`, gradient bytes, AdamW state bytes) of the named parameters (`ecr.models.memory`)."""
    counts: dict[str, dict[str, int]] = {}
    grads = states = 0
    for name, param in named:
        base = _base_name(name)
        row = counts.setdefault(
            part_of(base, rules), {"parameters": 0, "trainable": 0, "weight_bytes": 0, "quantized": 0}
        )
        n = param.numel()
        added = ".lora_" in name or ".modules_to_save." in name  # peft's adapters and trained copies
        each = LORA_BYTES if ".lora_" in name else dtype_bytes
        if added:
            row["weight_bytes"] += n * each
        else:
            row["parameters"] += n
            if base in quantized_rows:
                row["quantized"] += n
                rows = quantized_rows[base]
                row["weight_bytes"] += int8_weight_bytes(n, rows) if quantization == "8bit" else nf4_weight_bytes(n)
            else:
                row["weight_bytes"] += n * dtype_bytes
        if param.requires_grad:
            row["trainable"] += n
            grads += n * each
            states += optimizer_bytes(n, each)
    return [PartCensus(name, **counts[name]) for name in PART_ORDER if name in counts], grads, states


def _base_name(peft_name: str) -> str:
    """A parameter name inside a peft-wrapped model as the plain model names it (`q_proj.base_layer.weight`
    → `q_proj.weight`, `x.modules_to_save.default.w` → `x.w`; adapter weights keep their `lora_` part)."""
    for wrapper in (".base_layer.", ".original_module.", ".modules_to_save.default."):
        peft_name = peft_name.replace(wrapper, ".")
    return peft_name


# ------------------------------------------------------------------------------------------- printing
def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def memory_rows(census: ModelCensus, gpus: int) -> list[tuple[str, str, Memory | None]]:
    """(GPUs, strategy, per-GPU memory or None where the strategy cannot run this setting)."""
    mem = census.memory
    rows: list[tuple[str, str, Memory | None]] = [("1", "single GPU", per_gpu(mem, 1, 0))]
    rows.append((str(gpus), "DDP", per_gpu(mem, gpus, 0)))
    rows.append((str(gpus), "ZeRO-2", per_gpu(mem, gpus, 2)))
    rows.append((str(gpus), "ZeRO-3", None if census.quantization != "none" else per_gpu(mem, gpus, 3)))
    return rows


def format_census(census: ModelCensus, gpus: int = 8) -> str:
    """The text `ecr model info` prints."""
    lora = census.lora
    adapt = (
        f"LoRA r={lora.r} on {census.lora_targets}"
        if lora.enabled
        else "full fine-tune of the language model and head (towers frozen)"
    )
    lines = [
        f"{census.source.origin} ({census.source.family}): weights {census.dtype}, quantization "
        f"{census.quantization}, {adapt}",
        "",
    ]
    part_rows = [
        (p.name, f"{p.parameters:,}", f"{p.trainable:,}", f"{p.quantized:,}", gib(p.weight_bytes)) for p in census.parts
    ]
    mem = census.memory
    part_rows.append(("total", f"{census.parameters:,}", f"{census.trainable:,}", "", gib(mem.weights)))
    lines.append(markdown_table(["part", "parameters", "trainable", "quantised", "weights"], part_rows, align=True))
    if census.tied_head:
        lines.append("The LM head is tied to the input embeddings (counted once, under the language model).")
    lines += ["", "Training memory per GPU (weights + gradients + AdamW states):", ""]
    mem_rows = []
    for n, strategy, m in memory_rows(census, gpus):
        if m is None:
            mem_rows.append((n, strategy, "n/a", "n/a", "n/a", "needs --quantization none (8/4-bit weights)"))
        else:
            mem_rows.append((n, strategy, gib(m.weights), gib(m.gradients), gib(m.optimizer), gib(m.total)))
    lines.append(markdown_table(["GPUs", "strategy", "weights", "gradients", "AdamW", "total"], mem_rows, align=True))
    lines += [
        "",
        "Activations are NOT included (they grow with batch size, frames and sequence length; gradient "
        "checkpointing reduces them), nor the CUDA context and temporary buffers. Gradients are in the trained "
        "parameters' dtype; AdamW keeps fp32 m and v (+ an fp32 master copy for 16-bit trained parameters).",
    ]
    return "\n".join(lines)


def info_command(
    model: str,
    quantization: Quantization = "none",
    dtype: WeightDtype = "bfloat16",
    lora: LoraSettings = DEFAULT_LORA,
    gpus: int = 8,
) -> int:
    """Print a policy's parameters per part, its trainable parameters and its training memory (no weights read).

    Args:
        model: A preset (qwen2.5-omni-3b, qwen2.5-omni-7b, humanomni-0.5b, humanomni-7b), a local model folder
            or a hub id already in the local HF cache (its config.json is read; never downloaded).
        quantization: bitsandbytes quantisation of the language model's Linear weights (none, 8bit, 4bit).
        dtype: Dtype of the unquantised weights (the policy's `dtype`).
        lora: LoRA adapter settings (as `model.init_args.policy.lora`); `--lora.enabled false` = full fine-tune.
        gpus: Number of GPUs (all nodes together) for the DDP / ZeRO-2 / ZeRO-3 rows.
    """
    census = model_census(model, quantization=quantization, dtype=dtype, lora=lora)
    print(format_census(census, gpus))
    return 0

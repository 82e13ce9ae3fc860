"""`ecr model info`: parameters and training memory of a policy, from its architecture alone (meta device).

The model is built on the meta device (no weights read, no memory used) from a preset's config values
(`ecr.models.presets`) or a folder's `config.json`. Each parameter is attributed to a part (towers, projectors,
language model, head), the LoRA adapter the policy would get is attached with peft itself (same target modules
as `ecr`'s `PolicyConfig` through the family's backbone), and the memory of weights, gradients and AdamW states
follows from the rules below (pure functions, tested against hand calculations).

Memory rules (activations, the CUDA context and temporary buffers are NOT included):
- weights: every parameter in the policy dtype, except the Linear weights bitsandbytes quantises (the language
  model's; towers, `lm_head` and the other modules the backbone keeps out of quantisation stay in the dtype):
  8bit = 1 byte per weight + one fp32 scale per output row; 4bit (NF4, double quantisation, as `ecr` loads it)
  = 0.5 byte per weight + one 8-bit absmax per 64-weight block + one fp32 absmax per 256 blocks + an fp32 offset.
  LoRA adapters are fp32 (peft casts 16-bit adapters to fp32).
- gradients: one per trainable parameter, in the trainable parameter's dtype.
- AdamW: fp32 m and v (8 bytes) per trainable parameter, plus an fp32 master copy (4 bytes) when the trainable
  parameter is 16-bit (bf16/fp16 full fine-tuning: DeepSpeed's mixed-precision rule, 2 + 2 + 12 bytes).
- ZeRO-2 shards gradients and optimizer states over the N GPUs; ZeRO-3 shards the weights too (and cannot
  partition bitsandbytes-quantised weights: `configs/deepspeed/zero3.yaml` switches quantisation off).
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecr.errors import ConfigError
from ecr.models.config import LoraSettings, PolicyConfig
from ecr.models.presets import PRESET_NAMES, preset_config
from ecr.rows import markdown_table

Quantization = Literal["none", "8bit", "4bit"]
WeightDtype = Literal["bfloat16", "float16", "float32"]
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4  # peft keeps adapters in fp32 (autocast_adapter_dtype)
NF4_BLOCK = 64  # bitsandbytes 4-bit block size
NF4_NESTED_BLOCK = 256  # double quantisation: one fp32 absmax per 256 8-bit absmax values

DEFAULT_LORA = LoraSettings()  # `PolicyConfig`'s default adapter (never mutated)

# config.json `model_type` (lower-cased) -> backbone family
MODEL_TYPES: dict[str, str] = {
    "qwen2_5_omni_thinker": "qwen2_5_omni",
    "qwen2_5_omni": "qwen2_5_omni",  # full Omni checkpoint: the thinker is `thinker_config`
    "humanomni_qwen2": "humanomni",
}
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


# ------------------------------------------------------------------------------------------- the maths
def int8_weight_bytes(numel: int, rows: int) -> int:
    """bitsandbytes LLM.int8 weight: int8 values + one fp32 scale (SCB) per output row."""
    return numel + 4 * rows


def nf4_weight_bytes(numel: int) -> int:
    """bitsandbytes NF4 weight with double quantisation: packed 4-bit values, an 8-bit absmax per 64-weight
    block, an fp32 absmax per 256 blocks and one fp32 offset (the 16/256-entry code tables are left out)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 4


def optimizer_bytes(trainable: int, param_bytes: int) -> int:
    """AdamW state: fp32 m and v, plus an fp32 master copy when the trained parameter is 16-bit."""
    return trainable * (8 + (4 if param_bytes < 4 else 0))


@dataclass(frozen=True)
class Memory:
    """Bytes of one training setting (per GPU)."""

    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def per_gpu(memory: Memory, gpus: int, zero: Literal[0, 2, 3]) -> Memory:
    """Per-GPU bytes with `gpus` data-parallel ranks: 0 = replicated (DDP), 2 = gradients and optimizer states
    sharded, 3 = weights sharded too."""
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus}")
    n = gpus if zero in (2, 3) else 1
    return Memory(
        weights=memory.weights / (gpus if zero == 3 else 1),
        gradients=memory.gradients / n,
        optimizer=memory.optimizer / n,
    )


# ------------------------------------------------------------------------------------ the architecture
@dataclass(frozen=True)
class ModelSource:
    """Where an architecture comes from: its family, its `config.json` values and a readable origin."""

    family: str
    config: dict[str, Any]
    origin: str
    folder: Path | None = None  # the model folder (None for a preset)


def family_of(config: dict[str, Any], where: str) -> str:
    """Backbone family of a `config.json` (by `model_type`; HumanOmni's mixed-case type included)."""
    model_type = str(config.get("model_type", "")).lower()
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{where}: model_type {config.get('model_type')!r} is not a known policy family; "
            f"expected one of {sorted(MODEL_TYPES)}"
        )
    return MODEL_TYPES[model_type]


def read_config_json(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no config.json (expected a Hugging Face model folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err


def model_source(model: str | Path) -> ModelSource:
    """A preset name (`qwen2.5-omni-7b`, ...), a local model folder or a hub id in the local HF cache."""
    name = str(model)
    if name.strip().lower() in PRESET_NAMES:
        config = preset_config(name)
        return ModelSource(family_of(config, f"preset {name}"), config, f"preset {name.strip().lower()}")
    from ecr.hub import resolve_pretrained

    try:
        folder = resolve_pretrained(name)
    except ConfigError as err:
        raise ConfigError(f"{name!r} is not a preset ({', '.join(PRESET_NAMES)}), and {err}") from err
    config = read_config_json(folder)
    return ModelSource(family_of(config, str(folder / "config.json")), config, str(folder), folder)


def build_skeleton(source: ModelSource) -> Any:
    """The family's model (the module `ecr` trains) on the meta device: shapes only, no memory, no weights."""
    if source.family == "qwen2_5_omni":
        import torch
        from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

        values = source.config
        if str(values.get("model_type", "")).lower() == "qwen2_5_omni":
            values = values.get("thinker_config") or {}
        config = Qwen2_5OmniThinkerConfig.from_dict(values)
        with torch.device("meta"):
            return Qwen2_5OmniThinkerForConditionalGeneration(config)
    if source.family == "humanomni":  # its tower configs: embedded in a preset, else read beside the folder
        try:
            humanomni = importlib.import_module("ecr.models.humanomni")
        except ModuleNotFoundError as err:
            if err.name and not err.name.startswith("ecr.models.humanomni"):
                raise
            raise ConfigError(
                f"{source.origin}: the humanomni family (ecr.models.humanomni) is not available in this "
                "version of ecr yet"
            ) from err
        return humanomni.skeleton(source.folder or source.config, device="meta")
    raise ConfigError(f"{source.origin}: no skeleton builder for family {source.family!r}")


def family_backbone(source: ModelSource, policy: PolicyConfig) -> Any:
    """The family's backbone object (not loaded): its LoRA targets and quantisation skips are `ecr`'s own."""
    from ecr.models.registry import backbone_class

    try:
        cls = backbone_class(source.family)
    except ConfigError as err:
        raise ConfigError(f"{source.origin}: backbone {source.family!r} is not registered in this ecr ({err})") from err
    return cls(policy)


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
    import torch

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
    rules = PARTS[source.family]
    head, embed = skeleton.get_output_embeddings(), skeleton.get_input_embeddings()
    tied = head is not None and embed is not None and head.weight is embed.weight

    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = list(backbone._skip_quantization()) + list(getattr(skeleton, "_keep_in_fp32_modules", None) or [])
    quantized_rows: dict[str, int] = {}  # weight name -> output rows, for the Linear weights bnb quantises
    if quantization != "none":
        for name, module in skeleton.named_modules():
            if isinstance(module, torch.nn.Linear) and should_convert_module(name, skip):
                quantized_rows[f"{name}.weight"] = module.out_features

    targets = backbone.lora_targets()
    if lora.enabled:  # as `HFBackbone._adapt`: peft freezes the base, trains adapters and modules_to_save copies
        from peft import LoraConfig, get_peft_model

        to_save = list(lora.modules_to_save) + backbone.trainable_towers() or None
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, target_modules=targets, lora_dropout=0.0, modules_to_save=to_save
        )
        named = list(get_peft_model(skeleton, config).get_base_model().named_parameters())
        if not any(".lora_" in n for n, _ in named):
            raise ConfigError(f"--lora.target_modules={targets!r} matched no module of {source.origin}")
    else:  # as `HFBackbone.load`: everything trains except the frozen towers
        skeleton.requires_grad_(True)
        for prefix in backbone.frozen_towers():
            skeleton.get_submodule(prefix).requires_grad_(False)
        named = list(skeleton.named_parameters())

    dtype_bytes = DTYPE_BYTES[dtype]
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
    parts = [PartCensus(name, **counts[name]) for name in PART_ORDER if name in counts]
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

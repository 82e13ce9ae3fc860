"""Training memory of a policy from its parameter counts: weights, gradients and AdamW states (pure functions).

`ecr model info` (`ecr.models.info`) counts the parameters; these rules turn counts into bytes, tested against
hand calculations. Activations, the CUDA context and temporary buffers are NOT included:
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

import math
from dataclasses import dataclass
from typing import Literal

from ecr.errors import ConfigError

DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4  # peft keeps adapters in fp32 (autocast_adapter_dtype)
NF4_BLOCK = 64  # bitsandbytes 4-bit block size
NF4_NESTED_BLOCK = 256  # double quantisation: one fp32 absmax per 256 8-bit absmax values


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

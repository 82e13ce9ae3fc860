"""How `ecr predict` decodes and which candidate it keeps: the generation settings, the per-batch sampling seed
and the best-of-N checks.

A module of its own so these settings (shown by `ecr predict --help`, stored in every predictions row) are read
and checked in one place, apart from `PredictModule`'s generation loop (`ecr.modules.predict`, which re-exports
them).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

from ecr.errors import ConfigError

Rerank = Literal["none", "verifier"]


@dataclass(frozen=True)
class GenerationSettings:
    """How `ecr predict` decodes (HF generation arguments); greedy by default."""

    do_sample: bool = False
    """Sample instead of greedy decoding (seeded per batch with the module's `seed`)."""
    max_new_tokens: int = 512
    """Longest completion; one that reaches it without EOS is marked `truncated`."""
    temperature: float = 1.0
    """Sampling temperature (with do_sample; the paper's evaluation: 0.3)."""
    top_p: float = 1.0
    """Nucleus sampling mass (with do_sample; 1 = off; the paper's evaluation: 0.9)."""
    top_k: int = 0
    """Top-k sampling (with do_sample; 0 = off)."""
    repetition_penalty: float = 1.0
    """HF repetition penalty (1 = off)."""

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # silence HF's "sampling flags are ignored" warnings of a generation_config that sets them
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch: `seed` + CRC32 of its first clip id (independent of batch position)."""
    return (int(seed) + zlib.crc32(str(first_id).encode())) % 2**63


def check_best_of_n(
    num_samples: int, rerank: Rerank, generation: GenerationSettings, verifier: str | None
) -> tuple[int, Rerank]:
    """Validated (num_samples, rerank); a ConfigError naming the option otherwise (`rerank` is checked too: a
    Python caller may pass any string)."""
    if rerank not in ("none", "verifier"):
        raise ConfigError(f"rerank: {rerank!r} is not none or verifier")
    if num_samples < 1:
        raise ConfigError(f"num_samples: {num_samples} must be >= 1")
    if num_samples > 1 and not generation.do_sample:
        raise ConfigError(
            f"num_samples: {num_samples} candidates per clip need sampling (greedy decoding draws the same one "
            "N times): set generation.do_sample: true (e.g. temperature 0.3, top_p 0.9)"
        )
    if num_samples > 1 and rerank == "none":
        raise ConfigError(f"num_samples: {num_samples} candidates per clip need a rule to keep one: rerank: verifier")
    if rerank == "verifier" and verifier is None:
        raise ConfigError("rerank: verifier scores candidates with the verifier: set `verifier:` to its folder")
    return num_samples, rerank


__all__ = ["GenerationSettings", "Rerank", "batch_seed", "check_best_of_n"]

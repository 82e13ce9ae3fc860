"""`ecr predict`: generate an answer and explanation for every clip of the predict split (the data's test split).

`PredictModule.predict_step` takes a "generate" batch of the `ClipDataModule` (prompts only, left padded, several
clips per batch), encodes each clip's media ONCE (`backbone.encode_prompt`), generates (greedy by default;
seeded sampling optional: the paper sampled at temperature 0.3, top-p 0.9 with no seed) and returns one row per
clip: id, ground truth, the canonical predicted label (None when the answer is unparseable or off-list), the raw
answer, the think text, the completion, its token count and whether it was truncated, and — with a verifier
configured — each think sentence with the verifier's label set (p per label, under the verifier's own τ), plus
the generation settings, seed and model identity. `ecr.evaluation.PredictionWriter` writes the rows.

The policy can be a base model, a merged folder (`policy.model`), an exported adapter (`policy.adapter`) or a
stage checkpoint (`checkpoint:`, an SFT or GRPO `last.ckpt`: the policy config and trained tensors are read from
it; Lightning's own `--ckpt_path` is not used, since this module trains nothing). A policy with `lora.enabled`
and no adapter or checkpoint gets no fresh (identity) LoRA. Every weight is frozen and runs in eval mode.

Sampling seeds: each batch draws with `torch.manual_seed(seed + crc32 of its first clip id)` inside a forked RNG,
so a rerun with the same batches reproduces every completion, and the global RNG is untouched.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ecr.errors import ConfigError
from ecr.labels import LabelSet
from ecr.metrics.explanation import sentence_labels, verifier_mapping
from ecr.models import PolicyConfig
from ecr.modules.base import PolicyStageModule
from ecr.modules.checkpoint import read_checkpoint
from ecr.prompts import parse_completion
from ecr.rl.masks import completion_mask
from ecr.rl.rollout import eos_ids, eval_mode


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


def _inference_policy(policy: PolicyConfig | dict[str, Any] | None, checkpoint: str | None) -> PolicyConfig:
    if checkpoint is not None:
        return PolicyConfig.from_dict(policy) if policy is not None else read_checkpoint(checkpoint)[0]
    if policy is None:
        raise ConfigError("PredictModule needs `policy` (a model folder, merged export or adapter) or `checkpoint`")
    config = PolicyConfig.from_dict(policy)
    if config.adapter is None and config.lora.enabled:  # a fresh LoRA is the identity: do not build one
        config = dataclasses.replace(config, lora=dataclasses.replace(config.lora, enabled=False))
    return config


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch: `seed` + CRC32 of its first clip id (independent of batch position)."""
    return (int(seed) + zlib.crc32(str(first_id).encode())) % 2**63


class PredictModule(PolicyStageModule):
    """Batched generation over the predict split, one row per clip (see module docstring)."""

    training_collate_mode = "generate"

    def __init__(
        self,
        policy: PolicyConfig | None = None,
        checkpoint: str | None = None,
        verifier: str | None = None,
        generation: GenerationSettings | None = None,
        seed: int = 0,
        splitter: str = "official",
        verifier_threshold: float | None = None,
    ) -> None:
        """
        Args:
            policy: The model to evaluate (a base model, `ecr export`'s merged/ folder as `model`, or `adapter`).
            checkpoint: SFT/GRPO Lightning checkpoint: its trained tensors and (unless `policy` is set) its policy.
            verifier: Verifier folder: each think sentence's verifier label set goes into the rows (None = none).
            generation: Decoding settings (greedy by default; do_sample with temperature/top_p for sampling).
            seed: Seed of sampled decoding (each batch: seed + CRC32 of its first clip id); recorded in every row.
            splitter: Sentence splitter for the verifier labels: official (paper regex) | pysbd.
            verifier_threshold: Override of the verifier's saved threshold τ (None = the folder's own).
        """
        checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        verifier = os.fspath(verifier) if verifier is not None else None
        super().__init__(
            _inference_policy(policy, checkpoint),
            lr=0.0,
            weight_decay=0.0,
            warmup_ratio=0.0,
            scheduler="constant",
            optimizer=None,
        )
        self.checkpoint = checkpoint
        self.verifier_path = verifier
        self.generation = (
            generation if isinstance(generation, GenerationSettings) else GenerationSettings(**(generation or {}))
        )
        self.seed = int(seed)
        self.splitter = splitter
        self.verifier_threshold = verifier_threshold
        self.reward: Any = None  # an ExplanationReward over the verifier (splitter, τ, mapping), set in setup()
        self.label_set: LabelSet | None = None
        self.save_hyperparameters(
            {
                "policy": self.policy_config.to_dict(),
                "checkpoint": checkpoint,
                "verifier": verifier,
                "generation": asdict(self.generation),
                "seed": self.seed,
                "splitter": splitter,
                "verifier_threshold": verifier_threshold,
            }
        )

    # ------------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        label_set = getattr(datamodule, "label_set", None)
        if label_set is None:
            raise ConfigError("PredictModule needs a DataModule with a `label_set` (e.g. ecr.data.ClipDataModule)")
        self.label_set = label_set
        if self.verifier_path is not None and self.reward is None:
            from ecr.models.verifier import load_verifier
            from ecr.rl.rewards import ExplanationReward

            verifier = load_verifier(self.verifier_path, threshold=self.verifier_threshold)
            self.reward = ExplanationReward(verifier, label_set, splitter=self.splitter)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        assert self.model is not None
        if self.checkpoint is not None:
            _, state = read_checkpoint(self.checkpoint)
            expected = set(self.backbone.trainable_parameter_names())
            missing, unexpected = expected - set(state), set(state) - expected
            if missing or unexpected:
                raise ConfigError(
                    f"{self.checkpoint}: trained tensors do not match the policy (missing {sorted(missing)[:5]}, "
                    f"unexpected {sorted(unexpected)[:5]}): was `policy` changed from the one trained?"
                )
            self.model.load_state_dict(state, strict=False)
        self.model.requires_grad_(False)
        self.model.eval()

    def on_predict_start(self) -> None:
        if self.reward is not None:
            self.reward.verifier.to(self.device)

    def model_identity(self) -> dict[str, Any]:
        cfg = self.policy_config
        return {"backbone": cfg.backbone, "model": cfg.model, "adapter": cfg.adapter, "checkpoint": self.checkpoint}

    def verifier_identity(self) -> dict[str, Any] | None:
        if self.reward is None:
            return None
        return {
            "path": self.verifier_path,
            "threshold": self.reward.threshold,
            "mapping": verifier_mapping(self.reward),
        }

    # ------------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def generate_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int | None]:
        """Completion ids [B, C] of a generate batch (media encoded once) and the batch's sampling seed."""
        kwargs = self.generation.generate_kwargs()
        with eval_mode(self.model):  # type: ignore[arg-type]
            prompt = self.backbone.encode_prompt(batch)
            if not self.generation.do_sample:
                return self.backbone.generate(prompt, **kwargs), None
            seed = batch_seed(self.seed, batch["meta"]["ids"][0])
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                return self.backbone.generate(prompt, **kwargs), seed

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        assert self.label_set is not None
        ids, seed = self.generate_batch(batch)
        texts = self.backbone.decode(ids)
        mask, truncated = completion_mask(ids, eos_ids(self.backbone))
        sentences = sentence_labels(self.reward, texts) if self.reward is not None else [None] * len(texts)
        common = {
            "generation": asdict(self.generation),
            "seed": self.seed,
            **({"sampling_seed": seed} if seed is not None else {}),
            "model": self.model_identity(),
        }
        verifier = self.verifier_identity()
        rows = []
        for i, text in enumerate(texts):
            parsed = parse_completion(text)
            row: dict[str, Any] = {
                "id": str(batch["meta"]["ids"][i]),
                "label": batch["meta"]["label"][i],
                "prediction": self.label_set.normalize(parsed.answer),
                "answer_text": parsed.answer,
                "think": parsed.think,
                "completion": text,
                "num_tokens": int(mask[i].sum()),
                "truncated": bool(truncated[i]),
            }
            if verifier is not None:
                row["sentences"] = sentences[i]
                row["verifier"] = verifier
            rows.append({**row, **common})
        return rows

    def training_step(self, batch: Any, batch_idx: int) -> None:
        raise ConfigError("PredictModule trains nothing: run it with `ecr predict`, not `ecr fit`")


__all__ = ["GenerationSettings", "PredictModule", "batch_seed"]

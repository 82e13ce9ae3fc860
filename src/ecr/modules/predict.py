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

Best-of-N (`num_samples` N > 1, `rerank: verifier`; needs sampling and a verifier): ONE generate call per batch
draws N candidates per clip (the media encoded once and the prompt prefilled once, its KV cache shared by the N
samples: `generate(..., group_size=N)`, as the GRPO rollout does); each candidate is scored by the explanation
reward against its OWN answer and the best is kept (`ecr.metrics.rerank`, docs/method.md §5). The row holds the
kept candidate's fields, `chosen` (its index) and `candidates` (every candidate's completion, prediction, score,
format validity, tokens, truncation).

Compound truth: a clip whose manifest record carries `labels` (a list, or a string split on `,;|`; custom
manifests keep it in `ClipRecord.meta`) gets `labels` (canonical) in its row, scored by `ecr score` as `compound`.

`ecr test --config …` runs the same generation in Lightning's test loop (`test_step`): the rows go to the
`PredictionWriter` (which writes the predictions file and metrics.json), and the metrics assembly `ecr score`
uses (`ecr.metrics.assembly.ClipMetrics`; with a verifier, the verifier judge on the live sentence labels;
torchmetrics, synced across ranks) is logged as `test/war`, `test/uar`, `test/epc`, `test/eea`, `test/fcr`
(`test/compound` with compound clips). A clip that a padding sampler gives to two ranks is counted once, on
the lowest rank that has it (the rank whose row the writer keeps).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch import LightningModule

from ecr.errors import ConfigError
from ecr.labels import LabelSet
from ecr.metrics.assembly import ClipMetrics, headline
from ecr.metrics.explanation import explanation_label
from ecr.metrics.recognition import class_ids
from ecr.metrics.rerank import best_candidates, score_candidates
from ecr.models import PolicyConfig
from ecr.modules.checkpointing import read_checkpoint, resolve_checkpoint
from ecr.modules.policy import StagePolicy
from ecr.modules.predict_clips import loader_ids, owned_ids, record_labels
from ecr.modules.predict_settings import GenerationSettings, Rerank, batch_seed, check_best_of_n
from ecr.prompts import parse_completion


def _resolved(checkpoint: str | os.PathLike[str] | None) -> str | None:
    """A run folder (or `RUN/last`) -> its newest checkpoint file, kept in the predictions' metadata; a path that
    does not resolve yet is kept as given (reading it later names it)."""
    if checkpoint is None:
        return None
    try:
        return os.fspath(resolve_checkpoint(checkpoint))
    except ConfigError:
        return os.fspath(checkpoint)


def _inference_policy(policy: PolicyConfig | dict[str, Any] | None, checkpoint: str | None) -> PolicyConfig:
    if checkpoint is not None:
        return PolicyConfig.from_dict(policy) if policy is not None else read_checkpoint(checkpoint)[0]
    if policy is None:
        raise ConfigError("PredictModule needs `policy` (a model folder, merged export or adapter) or `checkpoint`")
    config = PolicyConfig.from_dict(policy)
    if config.adapter is None and config.lora.enabled:  # a fresh LoRA is the identity: do not build one
        config = dataclasses.replace(config, lora=dataclasses.replace(config.lora, enabled=False))
    return config


class PredictModule(LightningModule):
    """Batched generation over the predict split, one row per clip (see module docstring); trains nothing."""

    def __init__(
        self,
        policy: PolicyConfig | None = None,
        checkpoint: str | None = None,
        verifier: str | None = None,
        generation: GenerationSettings | None = None,
        seed: int = 0,
        splitter: str = "official",
        verifier_threshold: float | None = None,
        num_samples: int = 1,
        rerank: Rerank = "none",
    ) -> None:
        """
        Args:
            policy: The model to evaluate (a base model, `ecr export`'s merged/ folder as `model`, or `adapter`).
            checkpoint: SFT/GRPO Lightning checkpoint: its trained tensors and (unless `policy` is set) its policy.
                A run folder (e.g. runs/grpo/tb) or `RUN/last` means its newest version's checkpoint.
            verifier: Verifier folder: each think sentence's verifier label set goes into the rows (None = none).
            generation: Decoding settings (greedy by default; do_sample with temperature/top_p for sampling).
            seed: Seed of sampled decoding (each batch: seed + CRC32 of its first clip id); recorded in every row.
            splitter: Sentence splitter for the verifier labels: official (paper regex) | pysbd.
            verifier_threshold: Override of the verifier's saved threshold τ (None = the folder's own).
            num_samples: Candidates drawn per clip (best-of-N; N > 1 needs generation.do_sample and rerank: verifier).
            rerank: How the kept candidate is chosen: none (N = 1) | verifier (the explanation reward of each
                candidate against its own answer, docs/method.md §5; needs `verifier`).
        """
        checkpoint = _resolved(checkpoint)
        verifier = os.fspath(verifier) if verifier is not None else None
        super().__init__()
        self.policy = StagePolicy(_inference_policy(policy, checkpoint), collate_mode="generate")
        self.policy_config, self.backbone = self.policy.config, self.policy.backbone
        self.model: torch.nn.Module | None = None
        self.checkpoint = checkpoint
        self.verifier_path = verifier
        self.generation = (
            generation if isinstance(generation, GenerationSettings) else GenerationSettings(**(generation or {}))
        )
        self.seed = int(seed)
        self.splitter = splitter
        self.verifier_threshold = verifier_threshold
        self.num_samples, self.rerank = check_best_of_n(int(num_samples), rerank, self.generation, verifier)
        self.reward: Any = None  # an ExplanationReward over the verifier (splitter, τ, mapping), set in setup()
        self.label_set: LabelSet | None = None
        self.compound: dict[str, list[str]] = {}  # clip id -> its compound truth (records with `labels`)
        self.test_report: dict[str, Any] | None = None  # the synced test metrics (what metrics.json holds)
        self._owned: set[str] | None = None  # clip ids this rank counts in the test metrics (None: all)
        self._counted: set[str] = set()
        self.save_hyperparameters(
            {
                "policy": self.policy_config.to_dict(),
                "checkpoint": checkpoint,
                "verifier": verifier,
                "generation": asdict(self.generation),
                "seed": self.seed,
                "splitter": splitter,
                "verifier_threshold": verifier_threshold,
                "num_samples": self.num_samples,
                "rerank": self.rerank,
            }
        )

    # ------------------------------------------------------------------------------------------- set-up
    @property
    def collator(self) -> Any:
        return self.policy.collator()

    def setup(self, stage: str) -> None:
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
        splits = getattr(datamodule, "splits", None) or {}
        self.compound = {}
        for records in splits.values():
            for record in records:
                labels = record_labels(record, label_set)
                if labels is not None:
                    self.compound[str(record.id)] = labels
        if stage == "test":
            self.test_metrics = ClipMetrics(label_set.labels, judged=self.reward is not None)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = self.policy.load(self)
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
            "mapping": self.reward.reader.class_mapping(),
        }

    # ------------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def generate_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int | None]:
        """Completion ids [B·N, C] of a generate batch (media encoded once; a clip's N candidates contiguous) and the
        batch's sampling seed."""
        kwargs = self.generation.generate_kwargs()
        if self.num_samples > 1:  # one prefill per clip, its KV cache shared by the N candidates -> [B·N, C]
            kwargs["group_size"] = self.num_samples
        prompt = self.backbone.encode_prompt(batch)  # the model is in eval mode (configure_model), as is `generate`
        if not self.generation.do_sample:
            return self.backbone.generate(prompt, **kwargs), None
        seed = batch_seed(self.seed, batch["meta"]["ids"][0])
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.backbone.generate(prompt, **kwargs), seed

    def rows(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """One predictions-file row per clip of a generate batch (what predict_step and test_step return)."""
        assert self.label_set is not None
        ids, seed = self.generate_batch(batch)
        texts = self.backbone.decode(ids)  # B·N
        mask, truncated = self.backbone.completion_mask(ids)
        n = self.num_samples
        clips = [str(c) for c in batch["meta"]["ids"]]
        scored = score_candidates(self.reward, texts, self.label_set) if self.rerank == "verifier" else None
        chosen = best_candidates(scored, n) if scored is not None else [0] * len(clips)
        keep = [i * n + j for i, j in enumerate(chosen)]  # flat index of each clip's kept candidate
        kept = [texts[k] for k in keep]
        sentences = self.reward.reader.sentence_labels(kept) if self.reward is not None else [None] * len(kept)
        common = {
            "generation": asdict(self.generation),
            "seed": self.seed,
            **({"sampling_seed": seed} if seed is not None else {}),
            "model": self.model_identity(),
        }
        verifier = self.verifier_identity()
        rows = []
        for i, k in enumerate(keep):
            parsed = parse_completion(texts[k])
            row: dict[str, Any] = {
                "id": clips[i],
                "label": batch["meta"]["label"][i],
                "prediction": self.label_set.normalize(parsed.answer),
                "answer_text": parsed.answer,
                "think": parsed.think,
                "completion": texts[k],
                "num_tokens": int(mask[k].sum()),
                "truncated": bool(truncated[k]),
            }
            if clips[i] in self.compound:
                row["labels"] = self.compound[clips[i]]
            if verifier is not None:
                row["sentences"] = sentences[i]
                row["verifier"] = verifier
            if scored is not None:
                row["rerank"] = {"method": self.rerank, "num_samples": n}
                row["chosen"] = chosen[i]
                row["candidates"] = [
                    {
                        "completion": texts[f],
                        "prediction": scored[f].prediction,
                        "score": scored[f].score,
                        "well_formed": scored[f].well_formed,
                        "num_tokens": int(mask[f].sum()),
                        "truncated": bool(truncated[f]),
                    }
                    for f in range(i * n, (i + 1) * n)
                ]
            rows.append({**row, **common})
        return rows

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        return self.rows(batch)

    # ------------------------------------------------------------------------------------------- test
    def on_test_start(self) -> None:
        if self.reward is not None:
            self.reward.verifier.to(self.device)
        self._counted = set()
        self._owned = None
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, loader_ids(self.trainer.test_dataloaders))
            self._owned = owned_ids(gathered, self.trainer.global_rank)

    def test_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, list[dict[str, Any]]]:
        """Generate as predict does, update the test metrics (each clip once), return the rows for the writer
        (`{"rows": [...]}`: Lightning's test_step returns a mapping)."""
        assert self.label_set is not None
        rows = self.rows(batch)
        counted = [r for r in rows if r["id"] not in self._counted and (self._owned is None or r["id"] in self._owned)]
        self._counted |= {r["id"] for r in counted}
        if not counted:
            return {"rows": rows}
        labels = self.label_set.labels
        pred = class_ids([r["prediction"] for r in counted], labels)  # [B']
        explained = None
        if self.reward is not None:
            mapping = self.reward.reader.class_mapping()
            judged = [explanation_label(r["sentences"], mapping, labels) for r in counted]
            explained = class_ids([j if isinstance(j, str) else None for j in judged], labels)  # [B']
        target = class_ids([r["label"] for r in counted], labels)  # [B']
        self.test_metrics.update(pred, target, explained, [r.get("labels") for r in counted])
        return {"rows": rows}

    def on_test_epoch_end(self) -> None:
        """Sync the metrics over ranks, log test/* and keep the report the writer puts in metrics.json."""
        judge = {"judge": "verifier", **(self.verifier_identity() or {})} if self.reward is not None else None
        self.test_report = self.test_metrics.report(judge, sync=True)  # the same assembly as `ecr score`
        self.log_dict({f"test/{k}": v for k, v in headline(self.test_report).items()}, sync_dist=True)


__all__ = ["GenerationSettings", "PredictModule", "Rerank", "batch_seed", "owned_ids", "record_labels"]

"""Stage 3, GRPO: reinforcement learning of the policy with format + accuracy + explanation (ERV) rewards.

One `training_step` = one micro-batch of B prompts: `ecr.rl.rollout.collect_rollout` encodes their media once,
samples G completions per prompt, scores them (rewards, group advantages, old/reference log-probs). After
`gradient_accumulation_steps` micro-batches the buffered rollouts are trained on `num_iterations` (μ) times,
one optimizer step per pass, with `ecr.rl.loss.grpo_loss` (docs/method.md §4). Optimisation is manual:
Lightning's automatic optimisation divides every loss by `accumulate_grad_batches`, which is wrong for the
token-level normalisation over the accumulated batch (`dapo`).

Where the encoders' output is reused and where it is recomputed:
- towers and token embeddings frozen (LoRA, the default): the rollout's encoding serves sampling, old,
  reference and every policy pass — the towers run once per prompt per step;
- a trainable tower or embedding matrix (full fine-tune): each update pass re-encodes the prompts with
  gradients (their features depend on the weights being trained), and a full-fine-tune reference copy
  encodes with its own weights. Still exact; just more encoder runs.

Reference policy (β > 0): with LoRA the same model with the adapter disabled; else a frozen copy loaded once
(`reference_device` may put it on the CPU). β = 0 computes none. A non-finite loss or gradient norm skips the
optimizer step (counted in `train/nonfinite_skips` by `StageModule.count_step`); `max_nonfinite_skips` in a
row, or a step that explodes the weights (`StageModule.checked_step`), stop the run with
`TrainingDivergedError` before a checkpoint can store diverged weights. Checkpoints add
the torch RNG state (sampling) to what Lightning saves (trained tensors, optimizer, scheduler, loop and
dataloader position).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn

from ecr.errors import ConfigError
from ecr.metrics import RecognitionMetrics
from ecr.models import PolicyConfig
from ecr.modules.base import OptimizerFactory, PolicyStageModule
from ecr.modules.report import markdown_table
from ecr.prompts import extract_answer
from ecr.rl.loss import accumulation_scale, grpo_loss
from ecr.rl.reward_config import DEFAULT_TERMS, RewardTerm, build_reward
from ecr.rl.rewards import CombinedReward
from ecr.rl.rollout import Rollout, collect_rollout
from ecr.rl.scorer import GroupScorer, SamplingSettings, build_scorer
from ecr.rl.spread import ZeroSpreadMonitor

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
AdvantageScale = Literal["group", "batch", "none"]


class GRPOModule(PolicyStageModule):
    """GRPO on a policy backbone with configured reward terms (see module docstring)."""

    training_collate_mode = "generate"

    def __init__(
        self,
        policy: PolicyConfig,
        verifier: str | None = None,
        rewards: list[RewardTerm] | None = None,
        num_generations: int = 4,
        sampling: SamplingSettings | None = None,
        beta: float = 0.04,
        loss_type: LossType = "grpo",
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        num_iterations: int = 1,
        gradient_accumulation_steps: int = 1,
        max_grad_norm: float | None = 1.0,
        scale_rewards: AdvantageScale = "group",
        filter_zero_std_groups: bool = False,
        mask_truncated_completions: bool = False,
        reference: Literal["auto", "adapter", "copy"] = "auto",
        reference_device: str | None = None,
        ref_model_sync_steps: int | None = None,
        logprob_chunk_tokens: int | None = None,
        share_prompt_prefix: bool = True,
        max_nonfinite_skips: int = 3,
        log_completions_every_n_steps: int = 10,
        val_max_new_tokens: int | None = None,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        scheduler: str = "constant_with_warmup",
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        """
        Args:
            policy: The policy to train (usually the SFT output: `policy.adapter` or a merged folder as `model`).
            verifier: Verifier folder for the explanation reward (the ERV stage's export, or a plain HF folder).
            rewards: Reward terms and weights (default: format + accuracy + explanation, weight 1 each).
            num_generations: Completions sampled per prompt (G).
            sampling: Sampling settings of the rollouts (max_new_tokens, temperature, top_p, top_k, ...).
            beta: Weight of the k3 KL penalty to the reference policy (0 = no reference pass at all).
            loss_type: Loss normalisation: grpo (paper) | bnpo | dr_grpo | dapo, as TRL defines them.
            epsilon_low: Lower PPO clip range (ratio floor 1 - epsilon_low).
            epsilon_high: Upper PPO clip range (ratio ceiling 1 + epsilon_high; DAPO raises it).
            num_iterations: Updates (μ) on each rollout batch; > 1 records old log-probs at sampling time.
            gradient_accumulation_steps: Micro-batches of prompts per optimizer step.
            max_grad_norm: Gradient clipping by total norm (None = off; the norm is logged either way).
            scale_rewards: Advantage scaling: group (paper: / group std) | batch (/ batch std) | none (Dr. GRPO).
            filter_zero_std_groups: Drop groups whose rewards have zero spread from the loss.
            mask_truncated_completions: Exclude completions that hit max_new_tokens without EOS (DAPO).
            reference: auto (adapter when LoRA is on, else copy) | adapter | copy (frozen copy loaded once).
            reference_device: Device of a copy reference (None = the policy's; "cpu" saves accelerator memory).
            ref_model_sync_steps: Copy the policy into a copy reference every N optimizer steps (None = never).
            logprob_chunk_tokens: Tokens per chunk of the LM head in log-prob passes (None = a 128 MiB budget).
            share_prompt_prefix: Prefill each prompt once for its G samples and run it once per group in log-prob
                passes, sharing its KV cache with the G completions (same samples, values and gradients; the
                log-prob passes turn it off automatically under gradient checkpointing).
            max_nonfinite_skips: Stop after this many non-finite steps in a row (none of them was applied).
            log_completions_every_n_steps: Write a completion table to TensorBoard every N optimizer steps (0 = off).
            val_max_new_tokens: Generation length in validation (None = the sampling max_new_tokens).
            lr: Peak learning rate of the default AdamW (ignored when `optimizer` is given).
            weight_decay: Weight decay of the default AdamW (biases and norms are never decayed).
            warmup_ratio: Fraction of the optimizer steps spent in linear warmup.
            scheduler: transformers schedule name after warmup (constant_with_warmup, linear, cosine, ...).
            optimizer: Optimizer factory (e.g. `class_path: torch.optim.AdamW` with its own lr) replacing the default.
        """
        super().__init__(
            policy,
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            scheduler=scheduler,
            optimizer=optimizer,
        )
        self.automatic_optimization = False
        if num_generations < 2:
            raise ConfigError(f"num_generations must be >= 2 (advantages compare completions), got {num_generations}")
        if num_iterations < 1 or gradient_accumulation_steps < 1:
            raise ConfigError("num_iterations and gradient_accumulation_steps must be >= 1")
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if reference == "adapter" and not self.policy_config.lora.enabled and self.policy_config.adapter is None:
            raise ConfigError("reference='adapter' needs a LoRA policy (policy.lora.enabled or policy.adapter)")
        if loss_type not in ("grpo", "bnpo", "dr_grpo", "dapo"):
            raise ConfigError(f"loss_type: {loss_type!r} is not grpo, bnpo, dr_grpo or dapo")
        self.verifier_path = verifier
        self.reward_terms = [t if isinstance(t, RewardTerm) else RewardTerm(**t) for t in (rewards or DEFAULT_TERMS)]
        self.sampling = sampling if isinstance(sampling, SamplingSettings) else SamplingSettings(**(sampling or {}))
        self.settings = {
            "num_generations": num_generations,
            "beta": beta,
            "loss_type": loss_type,
            "epsilon_low": epsilon_low,
            "epsilon_high": epsilon_high,
            "num_iterations": num_iterations,
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "max_grad_norm": max_grad_norm,
            "scale_rewards": scale_rewards,
            "filter_zero_std_groups": filter_zero_std_groups,
            "mask_truncated_completions": mask_truncated_completions,
            "reference": reference,
            "reference_device": reference_device,
            "ref_model_sync_steps": ref_model_sync_steps,
            "logprob_chunk_tokens": logprob_chunk_tokens,
            "share_prompt_prefix": share_prompt_prefix,
            "max_nonfinite_skips": max_nonfinite_skips,
            "log_completions_every_n_steps": log_completions_every_n_steps,
            "val_max_new_tokens": val_max_new_tokens,
        }
        self.save_hyperparameters(
            {
                **self.policy_hparams(),
                **self.settings,
                "verifier": verifier,
                "rewards": [asdict(t) for t in self.reward_terms],
                "sampling": asdict(self.sampling),
            }
        )
        self.reward: CombinedReward | None = None
        self.scorer: GroupScorer | None = None  # built in configure_model (needs the loaded policy)
        self._buffer: list[Rollout] = []
        self.max_nonfinite_skips = max_nonfinite_skips
        self.val_recognition: RecognitionMetrics | None = None  # built in setup (needs the label set)
        self.zero_spread = ZeroSpreadMonitor()  # warns when every group has zero reward spread for a while

    # ------------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        label_set = getattr(datamodule, "label_set", None)
        if label_set is None:
            raise ConfigError("GRPOModule needs a DataModule with a `label_set` (e.g. ecr.data.ClipDataModule)")
        if self.reward is None:
            self.reward = build_reward(
                self.reward_terms,
                label_set=label_set,
                verifier=self.verifier_path,
                eos_tokens=self.backbone.eos_texts(),
            )
        if self.val_recognition is None:
            self.val_recognition = RecognitionMetrics(list(label_set.labels))

    def configure_model(self) -> None:
        super().configure_model()
        if self.scorer is not None:
            return
        s = self.settings
        self.scorer = build_scorer(
            self.backbone,
            group_size=s["num_generations"],
            sampling=self.sampling,
            chunk_tokens=s["logprob_chunk_tokens"],
            share_prefix=s["share_prompt_prefix"],
            beta=s["beta"],
            reference=s["reference"],
            reference_device=s["reference_device"] or (self.trainer.strategy.root_device if self._trainer else None),
        )

    def total_optimizer_steps(self) -> int:
        """max_steps, else ⌈batches / accumulation⌉ · μ over the fit (one step per pass over a rollout buffer)."""
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return int(self.trainer.max_steps)
        batches = max(1, int(self.trainer.estimated_stepping_batches))
        return math.ceil(batches / self.settings["gradient_accumulation_steps"]) * self.settings["num_iterations"]

    # ----------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        assert self.reward is not None
        s = self.settings
        assert self.scorer is not None
        rollout = collect_rollout(
            self.scorer,
            batch,
            self.reward,
            advantage_scale=s["scale_rewards"],
            mask_truncated_completions=s["mask_truncated_completions"],
            need_old_logp=s["num_iterations"] > 1,
        )
        self._log_rollout(rollout)
        if s["filter_zero_std_groups"]:
            rollout = rollout.keep_groups(~rollout.zero_std)
        if rollout.completion_ids.shape[0] > 0:
            self._buffer.append(rollout)
        if batch_idx % s["gradient_accumulation_steps"] == s["gradient_accumulation_steps"] - 1:
            self._train_on_buffer()

    def on_train_epoch_end(self) -> None:
        if self._buffer:  # an epoch whose batches do not fill the last accumulation window
            self._train_on_buffer()

    def _num_items(self, buffer: Sequence[Rollout]) -> float:
        """Active tokens of the whole accumulated batch on all devices (dapo's normaliser; `accumulation_scale`
        undoes DDP's averaging of gradients over ranks)."""
        local = torch.tensor(float(sum(r.num_tokens for r in buffer)), device=self.device)
        total = self.trainer.strategy.reduce(local, reduce_op="sum") if self.trainer.world_size > 1 else local
        return max(1.0, float(total))

    def _train_on_buffer(self) -> None:
        buffer, self._buffer = self._buffer, []
        if not buffer:
            return
        s, scorer = self.settings, self.scorer
        assert scorer is not None
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        scale = accumulation_scale(s["loss_type"], len(buffer), self.trainer.world_size)
        num_items = self._num_items(buffer) if s["loss_type"] == "dapo" else None
        for _ in range(s["num_iterations"]):
            t0 = time.perf_counter()
            losses, stats, entropies = [], [], []
            for r in buffer:
                scores = scorer.scores(r.update_prompt(self.backbone), r.completion_ids, r.mask)  # [N, C]
                old = r.old_logp if r.old_logp is not None else scores.logprobs.detach()
                loss, st = grpo_loss(
                    scores.logprobs,
                    old,
                    r.ref_logp,
                    r.advantages,
                    r.mask,
                    loss_type=s["loss_type"],
                    epsilon_low=s["epsilon_low"],
                    epsilon_high=s["epsilon_high"],
                    beta=s["beta"],
                    max_completion_length=self.sampling.max_new_tokens,
                    num_items_in_batch=num_items,
                )
                self.manual_backward(loss * scale)
                losses.append(float(loss.detach()) * scale)
                stats.append(st)
                entropies.append(float((scores.entropy * r.mask).sum() / r.mask.sum().clamp(min=1)))
            self._optimizer_step(optimizer, scheduler, sum(losses), stats, entropies, time.perf_counter() - t0)
        self._maybe_log_completions(buffer)

    def _grad_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return torch.tensor(0.0)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))

    def _optimizer_step(self, optimizer, scheduler, loss: float, stats: list, entropies: list, seconds: float) -> None:
        s = self.settings
        norm = self._grad_norm()
        finite = math.isfinite(loss) and bool(torch.isfinite(norm))
        if finite and s["max_grad_norm"] is not None:
            self.clip_gradients(optimizer, gradient_clip_val=s["max_grad_norm"], gradient_clip_algorithm="norm")
        if not self.count_step(finite):  # counted as train/nonfinite_skips; too many in a row stop the run
            optimizer.zero_grad(set_to_none=True)
            return
        self.checked_step(optimizer, optimizer.step)  # non-finite or exploded weights stop before a checkpoint
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        mean = lambda name: sum(float(getattr(st, name)) for st in stats) / len(stats)  # noqa: E731
        self.log_dict(
            {
                "train/loss": loss,
                "train/grad_norm": float(norm),
                "train/kl": mean("mean_kl"),
                "train/clip_low": mean("clip_low_fraction"),
                "train/clip_high": mean("clip_high_fraction"),
                "train/clip_region": mean("clip_region_fraction"),
                "train/ratio": mean("mean_ratio"),
                "train/entropy": sum(entropies) / len(entropies),
                "train/time/update": seconds,
            },
            prog_bar=False,
        )
        self.log("kl", mean("mean_kl"), prog_bar=True, logger=False)
        self._sync_reference()

    def _sync_reference(self) -> None:
        every = self.settings["ref_model_sync_steps"]
        if every and self.scorer is not None and not self.global_step % every:
            self.scorer.sync_reference()

    # ----------------------------------------------------------------------------------------- logging
    def _log_rollout(self, r: Rollout) -> None:
        lengths = r.mask.sum(-1)
        n = len(r.texts)
        values: dict[str, float] = {
            "train/reward": float(r.rewards.total.mean()),
            "train/reward_std": float(r.rewards.total.std()) if n > 1 else 0.0,
            "train/frac_zero_std": float(r.zero_std.float().mean()),
            "train/completion_length": float(lengths.mean()),
            "train/completion_length_min": float(lengths.min()),
            "train/completion_length_max": float(lengths.max()),
            "train/truncated": float(r.truncated.float().mean()),
        }
        for name, t in r.rewards.terms.items():
            values[f"train/reward/{name}"] = float(t.mean())
            values[f"train/reward/{name}_std"] = float(t.std()) if n > 1 else 0.0
        for name, t in r.rewards.stats.items():
            values[f"train/reward/{name}"] = float(t.mean()) if t.numel() else 0.0
        for name, sec in r.timings.items():
            values[f"train/time/{name}"] = sec
        gen = r.timings.get("generate", 0.0)
        values["train/tokens_per_s"] = float(lengths.sum()) / gen if gen > 0 else 0.0
        self.log_dict(values, batch_size=n)
        self.log("reward", values["train/reward"], prog_bar=True, logger=False, batch_size=n)
        g, t = self.settings["num_generations"], self.sampling.temperature
        if warning := self.zero_spread.update(values["train/frac_zero_std"], num_generations=g, temperature=t):
            rank_zero_warn(warning)

    def _maybe_log_completions(self, buffer: Sequence[Rollout]) -> None:
        every = self.settings["log_completions_every_n_steps"]
        logger = getattr(self, "logger", None)
        if not every or self.global_step % every or logger is None or not hasattr(logger.experiment, "add_text"):
            return
        r = buffer[0]
        terms = list(r.rewards.terms)
        rows = [
            [r.clip_ids[i], r.labels[i], r.texts[i], *[f"{r.rewards.terms[t][i]:.2f}" for t in terms],
             f"{float(r.advantages[i]):.2f}"]
            for i in range(len(r.texts))
        ]  # fmt: skip
        table = markdown_table(["clip", "label", "completion", *terms, "advantage"], rows)
        logger.experiment.add_text("completions", table, global_step=self.global_step)

    # --------------------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        assert self.reward is not None
        with torch.no_grad():
            prompt = self.backbone.encode_prompt(batch)
            ids = self.backbone.generate(
                prompt,
                do_sample=False,
                max_new_tokens=self.settings["val_max_new_tokens"] or self.sampling.max_new_tokens,
            )
        texts = self.backbone.decode(ids)
        labels = batch["meta"]["label"]
        out = self.reward(texts, labels)
        n = len(texts)
        self.log_dict({f"val/reward/{k}": sum(v) / n for k, v in out.terms.items()}, batch_size=n, sync_dist=True)
        self.log("val/reward", sum(out.total) / n, batch_size=n, sync_dist=True, prog_bar=True)
        label_set = self.trainer.datamodule.label_set  # type: ignore[attr-defined]
        preds = []
        for text in texts:
            answer = label_set.normalize(extract_answer(text))
            preds.append(label_set.labels.index(answer) if answer is not None else -1)
        assert self.val_recognition is not None
        self.val_recognition.to(self.device).update(torch.tensor(preds), batch["meta"]["label_id"])

    def on_validation_epoch_end(self) -> None:
        assert self.val_recognition is not None
        scores = self.val_recognition.compute()  # reduced over devices (torchmetrics)
        self.val_recognition.reset()
        self.log_dict({"val/war": float(scores["war"]), "val/uar": float(scores["uar"])})

    # ------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ecr_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["ecr_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        rng = checkpoint.get("ecr_rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

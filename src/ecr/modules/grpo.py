"""Stage 3, GRPO: reinforcement learning of the policy with format + accuracy + explanation (ERV) rewards.

One `training_step` = one micro-batch of B prompts (`ecr.modules.grpo_draw`): `ecr.rl.rollout.sample_rollout`
encodes their media once, samples G completions per prompt and rewards them (group advantages); groups may be
dropped (`filter_zero_std_groups`) or drawn until B have reward spread (`dynamic_sampling`); `score_rollout` then
takes the old/reference log-probs of the groups kept. After
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
optimizer step (counted in `train/nonfinite_skips` by `ecr.modules.optim.DivergenceGuard`); `max_nonfinite_skips`
in a row, or a step that explodes the weights, stop the run with `TrainingDivergedError` before a checkpoint can
store diverged weights. Checkpoints add the torch RNG state (sampling) to what Lightning saves (trained tensors,
optimizer, scheduler, loop and dataloader position). The settings are `GRPOSettings` (YAML `grpo:`) and
`OptimizationSettings` (`optimization:`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from ecr.errors import ConfigError
from ecr.labels import LabelSet
from ecr.metrics import RecognitionMetrics
from ecr.models import PolicyConfig
from ecr.modules.base import StageModule
from ecr.modules.checkpointing import restore_rng, save_rng
from ecr.modules.grpo_draw import MicroBatch, draw_micro_batch
from ecr.modules.grpo_logs import completion_table, trained_metrics
from ecr.modules.grpo_settings import GRPO_OPTIMIZATION, GRPOSettings
from ecr.modules.optim import OptimizationSettings, OptimizerFactory, weight_norm
from ecr.modules.policy import StagePolicy
from ecr.prompts import extract_answer
from ecr.rl.entropy import entropy_bonus, gathered_entropies, high_entropy_mask
from ecr.rl.loss import LossStats, accumulation_scale, grpo_loss
from ecr.rl.off_policy import policy_weights
from ecr.rl.reward_config import DEFAULT_TERMS, RewardTerm, build_reward
from ecr.rl.rewards import CombinedReward
from ecr.rl.rollout import Rollout, rollout_metrics
from ecr.rl.scorer import GroupScorer, SamplingSettings, build_scorer
from ecr.rl.spread import ZeroSpreadMonitor

# logged name -> `ecr.rl.loss.LossStats` field, averaged over the micro-batches of an optimizer step
LOSS_STATS = {
    "kl": "mean_kl",
    "clip_low": "clip_low_fraction",
    "clip_high": "clip_high_fraction",
    "clip_region": "clip_region_fraction",
    "ratio": "mean_ratio",
}


class GRPOModule(StageModule):
    """GRPO on a policy backbone with configured reward terms (see module docstring)."""

    def __init__(
        self,
        policy: PolicyConfig,
        verifier: str | None = None,
        rewards: list[RewardTerm] | None = None,
        sampling: SamplingSettings | None = None,
        grpo: GRPOSettings = GRPOSettings(),
        optimization: OptimizationSettings = GRPO_OPTIMIZATION,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        """
        Args:
            policy: The policy to train (usually the SFT output: `policy.adapter` or a merged folder as `model`).
            verifier: Verifier folder for the explanation reward (the ERV stage's export, or a plain HF folder).
            rewards: Reward terms and weights (default: format + accuracy + explanation, weight 1 each).
            sampling: Sampling settings of the rollouts (max_new_tokens, temperature, top_p, top_k, ...).
            grpo: Group size, KL weight, loss, clipping, accumulation, reference, ... (`GRPOSettings`).
            optimization: Learning rate, weight decay, warmup and schedule of the default AdamW.
            optimizer: Optimizer factory (e.g. `class_path: torch.optim.AdamW` with its own lr) replacing the default.
        """
        super().__init__(OptimizationSettings.of(optimization, GRPO_OPTIMIZATION), optimizer)
        self.automatic_optimization = False
        self.policy = StagePolicy(policy, collate_mode="generate")
        self.policy_config, self.backbone = self.policy.config, self.policy.backbone
        self.model: torch.nn.Module | None = None
        self.settings = GRPOSettings.of(grpo)
        self.settings.check_reference(self.policy_config.lora.enabled or self.policy_config.adapter is not None)
        self.guard.max_nonfinite_skips = self.settings.max_nonfinite_skips
        self.verifier_path = verifier
        self.reward_terms = [t if isinstance(t, RewardTerm) else RewardTerm(**t) for t in (rewards or DEFAULT_TERMS)]
        self.sampling = sampling if isinstance(sampling, SamplingSettings) else SamplingSettings(**(sampling or {}))
        self.save_hyperparameters(
            {
                "policy": self.policy_config.to_dict(),
                **self.optimization_hparams(),
                "grpo": asdict(self.settings),
                "verifier": verifier,
                "rewards": [asdict(t) for t in self.reward_terms],
                "sampling": asdict(self.sampling),
            }
        )
        self.reward: CombinedReward | None = None
        self.scorer: GroupScorer | None = None  # built in configure_model (needs the loaded policy)
        self._buffer: list[Rollout] = []
        self.val_recognition: RecognitionMetrics | None = None  # built in setup (needs the label set)
        self.zero_spread = ZeroSpreadMonitor()  # warns when every group has zero reward spread for a while
        self.dynamic_short_steps = 0  # dynamic-sampling steps that trained fewer groups than wanted (resumed)

    # ------------------------------------------------------------------------------------------- set-up
    @property
    def collator(self) -> Any:
        return self.policy.collator()

    def generate_texts(self, samples: list[Any], **generation_kwargs: Any) -> list[str]:
        """Generate for raw samples (prompt only) and decode; used by callbacks and evaluation."""
        return self.policy.generate_texts(self, samples, **generation_kwargs)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        label_set = getattr(datamodule, "label_set", None)
        if label_set is None:
            raise ConfigError("GRPOModule needs a DataModule with a `label_set` (e.g. ecr.data.ClipDataModule)")
        self.label_set: LabelSet = label_set
        if self.reward is None:
            eos = self.backbone.eos_texts()
            self.reward = build_reward(
                self.reward_terms, label_set=label_set, verifier=self.verifier_path, eos_tokens=eos
            )
        if self.val_recognition is None:
            self.val_recognition = RecognitionMetrics(list(label_set.labels))

    def configure_model(self) -> None:
        if self.model is None:
            self.model = self.policy.load(self)
        if self.scorer is not None:
            return
        s = self.settings
        self.scorer = build_scorer(
            self.backbone,
            group_size=s.num_generations,
            sampling=self.sampling,
            chunk_tokens=s.logprob_chunk_tokens,
            share_prefix=s.share_prompt_prefix,
            beta=s.beta,
            reference=s.reference,
            reference_device=s.reference_device or (self.trainer.strategy.root_device if self._trainer else None),
        )

    def total_optimizer_steps(self) -> int:
        """max_steps, else ⌈batches / accumulation⌉ · μ over the fit (one step per pass over a rollout buffer)."""
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return int(self.trainer.max_steps)
        if self.settings.dynamic_sampling:  # a step draws several batches: the schedule would be stretched
            rank_zero_warn("dynamic_sampling without trainer.max_steps: the lr schedule assumes one batch per step")
        batches = max(1, int(self.trainer.estimated_stepping_batches))
        return math.ceil(batches / self.settings.gradient_accumulation_steps) * self.settings.num_iterations

    # ----------------------------------------------------------------------------------------- training
    def training_step(self, dataloader_iter: Iterator[Any]) -> None:
        """One micro-batch (`ecr.modules.grpo_draw`: the iterator lets dynamic sampling draw more prompts)."""
        micro = draw_micro_batch(self, dataloader_iter)  # StopIteration ends the epoch
        self._log_rollout(micro)
        if micro.trained is not None:
            self._buffer.append(micro.trained)
        accumulation = self.settings.gradient_accumulation_steps
        if self._micro_batch_index() % accumulation == accumulation - 1:
            self._train_on_buffer()

    def _micro_batch_index(self) -> int:
        """This epoch's index of the current training step (Lightning counts steps, not batches drawn)."""
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.ready) - 1

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
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        scale = accumulation_scale(s.loss_type, len(buffer), self.trainer.world_size)
        num_items = self._num_items(buffer) if s.loss_type == "dapo" else None
        for _ in range(s.num_iterations):
            t0, losses, stats, entropies = time.perf_counter(), [], [], []
            for r in buffer:
                scores = scorer.scores(r.update_prompt(self.backbone), r.completion_ids, r.mask)  # [N, C]
                old = r.old_logp if r.old_logp is not None else scores.logprobs.detach()
                keep, weights = self._policy_weights(r, scores.entropy.detach())  # no gradient; [N, C] or None
                loss, st = grpo_loss(scores.logprobs, old, r.ref_logp, r.advantages, r.mask, **s.loss_options(),
                                     max_completion_length=self.sampling.max_new_tokens, num_items_in_batch=num_items,
                                     policy_weights=weights)  # fmt: skip
                loss = loss - entropy_bonus(scores.entropy, r.mask, keep, s.entropy_coef, s.loss_type, num_items)
                self.manual_backward(loss * scale)
                losses.append(float(loss.detach()) * scale)
                stats.append(st)
                entropies.append(float((scores.entropy.detach() * r.mask).sum() / r.mask.sum().clamp(min=1)))
            self._optimizer_step(optimizer, scheduler, sum(losses), stats, entropies, time.perf_counter() - t0)
        self._maybe_log_completions(buffer)

    def _policy_weights(self, r: Rollout, entropy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(high-entropy mask over all ranks, it times the `off_policy` correction): for the bonus, the loss."""
        s, keep = self.settings, None
        if s.top_entropy_quantile < 1.0:
            pool = gathered_entropies(entropy, r.mask, self.all_gather) if self.trainer.world_size > 1 else None
            keep = high_entropy_mask(entropy, r.mask, s.top_entropy_quantile, pool=pool).to(r.mask.dtype)
            self.log("train/entropy_mask_kept", float(keep.sum() / r.mask.sum().clamp(min=1)), batch_size=1)
        weights, logged = policy_weights(r.old_logp, r.sampler_logp, r.mask, keep, **s.off_policy_options())
        if r.sampler_logp is not None and not logged:
            rank_zero_warn("GRPO samples with top_k/top_p/min_p but off_policy_correction is none: biased gradient")
        self.log_dict(logged, batch_size=1)
        return keep, weights

    def _optimizer_step(
        self, optimizer: Any, scheduler: Any, loss: float, stats: list[LossStats], entropies: list[float], took: float
    ) -> None:
        s = self.settings
        norm = torch.tensor(weight_norm(p.grad for p in self.parameters() if p.grad is not None))
        finite = math.isfinite(loss) and bool(torch.isfinite(norm))
        if finite and s.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=s.max_grad_norm, gradient_clip_algorithm="norm")
        if not self.count_step(finite):  # counted as train/nonfinite_skips; too many in a row stop the run
            optimizer.zero_grad(set_to_none=True)
            return
        self.checked_step(optimizer, optimizer.step)  # non-finite or exploded weights stop before a checkpoint
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        mean = lambda name: sum(float(getattr(st, name)) for st in stats) / len(stats)  # noqa: E731
        values = {f"train/{k}": mean(name) for k, name in LOSS_STATS.items()}
        values.update({"train/loss": loss, "train/grad_norm": float(norm), "train/time/update": took})
        self.log_dict({**values, "train/entropy": sum(entropies) / len(entropies)}, batch_size=1)
        self.log("kl", values["train/kl"], prog_bar=True, logger=False, batch_size=1)
        self._sync_reference()

    def _sync_reference(self) -> None:
        every = self.settings.ref_model_sync_steps
        if every and self.scorer is not None and not self.global_step % every:
            self.scorer.sync_reference()

    # ----------------------------------------------------------------------------------------- logging
    def _log_rollout(self, micro: MicroBatch) -> None:
        self.dynamic_short_steps += int(micro.filled is not None and micro.filled.short)
        values = {f"train/{k}": v for k, v in rollout_metrics(micro.drawn).items()}
        values.update(trained_metrics(micro, self.dynamic_short_steps))
        self.log_dict(values, batch_size=1)
        self.log("reward", values["train/reward"], prog_bar=True, logger=False, batch_size=1)
        g, t = self.settings.num_generations, self.sampling.temperature
        if warning := self.zero_spread.update(values["train/frac_zero_std"], num_generations=g, temperature=t):
            rank_zero_warn(warning)

    def _maybe_log_completions(self, buffer: Sequence[Rollout]) -> None:
        every = self.settings.log_completions_every_n_steps
        logger = getattr(self, "logger", None)
        if not every or self.global_step % every or logger is None or not hasattr(logger.experiment, "add_text"):
            return
        logger.experiment.add_text("completions", completion_table(buffer[0]), global_step=self.global_step)

    # --------------------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        assert self.reward is not None
        max_new_tokens = self.settings.val_max_new_tokens or self.sampling.max_new_tokens
        with torch.no_grad():
            ids = self.backbone.generate(
                self.backbone.encode_prompt(batch), do_sample=False, max_new_tokens=max_new_tokens
            )
        texts = self.backbone.decode(ids)
        labels = batch["meta"]["label"]
        out = self.reward(texts, labels)
        n = len(texts)
        self.log_dict({f"val/reward/{k}": sum(v) / n for k, v in out.terms.items()}, batch_size=n, sync_dist=True)
        self.log("val/reward", sum(out.total) / n, batch_size=n, sync_dist=True, prog_bar=True)
        label_set = self.label_set
        answers = [label_set.normalize(extract_answer(text)) for text in texts]
        preds = [label_set.labels.index(a) if a is not None else -1 for a in answers]
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
        save_rng(checkpoint)  # the sampling RNG: a resumed run samples what the uninterrupted one would
        checkpoint["ecr_grpo"] = {"dynamic_short_steps": self.dynamic_short_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        restore_rng(checkpoint)
        self.dynamic_short_steps = int(checkpoint.get("ecr_grpo", {}).get("dynamic_short_steps", 0))

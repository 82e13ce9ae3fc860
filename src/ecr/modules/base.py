"""What every training stage shares, so a new stage (GRPO, …) adds only its own steps.

`StageModule` (ERV, SFT, GRPO):
- optimiser + schedule: injectable (`optimizer:` in YAML, e.g. `class_path: torch.optim.SGD`; default AdamW at
  `lr`/`weight_decay`), parameters split into decayed weights and undecayed biases/norms, a transformers
  schedule by name (`scheduler`) with linear warmup over `warmup_ratio` of the optimizer steps;
- checkpoints hold only what training changed: parameters with `requires_grad` plus the module's own
  persistent buffers (e.g. the verifier's τ), never the frozen base weights, which come back from their
  source in `configure_model()`. `load_state_dict` loads the model first if needed and checks that exactly
  those tensors are present, so a partial or foreign checkpoint cannot load silently;
- checkpoints name their class (`_class_path`, as LightningCLI writes it), so `ecr fit … --ckpt_path PATH`
  can re-parse their hyper-parameters whatever way the module was built (CLI or Python);
- a step whose loss or gradients are not finite is skipped (the weights and optimizer state stay as they
  were; counted in `nonfinite_skips` and logged as `train/nonfinite_skips`), and `max_nonfinite_skips`
  skips in a row, or a step that makes the weights non-finite or explodes them (their norm grows more than
  `max_weight_growth` times at once, e.g. lr 1e30), stop the run with `TrainingDivergedError` before that
  step's checkpoint is written, so checkpoints never hold diverged weights (`checked_step`, also used by
  GRPO's manual step). (fp16 runs with a GradScaler and DeepSpeed keep their own overflow handling.)
- `SafeCheckpointIO` (installed by `ecr fit`): a checkpoint is written beside its target and renamed over
  it, so a full disk cannot truncate the previous one (Lightning's own writer copies over it in place when
  the system temp folder is on another file system), and a failed write is a `CheckpointWriteError`.
- on resume, the train loader Lightning builds early to size the schedule is dropped before the restore, so
  the fit loop rebuilds it and loads its saved position (exact mid-epoch resume).

`PolicyStageModule` (SFT, GRPO) adds the policy plumbing: the backbone from `PolicyConfig` (cheap in
`__init__`), its training collator handed to the DataModule in `setup()` (decoding and processing run in
DataLoader workers), the weights loaded in `configure_model()` (idempotent; Lightning calls it before
restoring a checkpoint), and `generate_texts(samples)` for callbacks and evaluation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ecr.errors import CheckpointWriteError, ConfigError, TrainingDivergedError
from ecr.models import PolicyBackbone, PolicyConfig, build_backbone
from ecr.models.backbone import CollateMode

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]


def decay_groups(named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters as optimizer groups: [decayed weights, undecayed biases and norms].

    With `weight_decay == 0` the split changes nothing, so it is one group (and the learning rate is logged as
    plain `lr`, not `lr/pg1`, `lr/pg2`). The decayed group carries no value of its own: the optimizer's applies.
    """
    decay, no_decay = [], []
    for name, p in named:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    if not weight_decay or not decay or not no_decay:
        return [{"params": decay + no_decay}] if decay or no_decay else []
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def class_path(obj: object) -> str:
    """Import path of `obj`'s class, as LightningCLI stores it in checkpoint hparams (`_class_path`)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def release_early_train_loader(trainer: Any) -> None:
    """Before a checkpoint restore, drop a train loader built early, so the fit loop rebuilds it and restores it.

    `configure_optimizers` runs before the restore, and reading `trainer.estimated_stepping_batches` there (for
    the schedule's length) builds the train loader; the fit loop keeps that loader and loads saved loader
    positions only into one it builds after the restore, so a mid-epoch resume would replay the epoch from
    its first batch. Rebuilding is cheap (nothing is decoded until iteration).
    """
    fit_loop = trainer.fit_loop
    if not hasattr(fit_loop, "_combined_loader"):  # pinned Lightning: fail loudly if its internals move
        raise RuntimeError("Lightning's fit loop has no `_combined_loader`: update release_early_train_loader")
    if trainer.ckpt_path is not None and fit_loop._combined_loader is not None:
        fit_loop._combined_loader = None


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoint writer that cannot destroy the previous checkpoint, and says so when a write fails.

    Lightning writes a local checkpoint to a temporary file in the system temp folder and then moves it: across
    file systems that move copies over the old file in place, so a full disk truncates the previous checkpoint
    too. Here the temporary file sits beside the target (same file system), is fsync'ed and `os.replace`d over
    it; a failed write removes it and raises `CheckpointWriteError` naming the file. Remote paths: Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError from OSError
            tmp.unlink(missing_ok=True)
            cause = err if isinstance(err, OSError) else err.__context__
            if not isinstance(cause, OSError):
                raise
            kept = f"{target} still holds the previous checkpoint" if target.is_file() else "nothing was replaced"
            raise CheckpointWriteError(
                f"writing checkpoint {target} failed ({cause.strerror or cause}); {kept}; free space and resume"
            ) from err
        return None


def weight_norm(tensors: Iterable[torch.Tensor]) -> float:
    """Global L2 norm of `tensors` as a float (inf/NaN if any value is), one device sync."""
    norms = [torch.linalg.vector_norm(t.detach().float()) for t in tensors]
    return float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))) if norms else 0.0


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """True when every given tensor (None entries ignored) holds only finite values (one device sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all()) if flags else True


class StageModule(LightningModule):
    """Optimiser/schedule injection and trainable-only checkpoints (see module docstring)."""

    max_nonfinite_skips: int = 3  # non-finite steps in a row that stop the run
    max_weight_growth: float = 10.0  # one optimizer step growing the trained weights' norm more stops the run

    def __init__(
        self,
        *,
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
        scheduler: str,
        optimizer: OptimizerFactory | None,
    ) -> None:
        super().__init__()
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.scheduler_name = scheduler
        self.optimizer_factory = optimizer
        self.nonfinite_skips = 0  # steps skipped for a non-finite loss or gradient, over the whole fit
        self._nonfinite_in_a_row = 0

    def optimization_hparams(self) -> dict[str, Any]:
        """The optimisation settings as plain hyper-parameters (the factory itself is not checkpoint-safe)."""
        return {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_ratio": self.warmup_ratio,
            "scheduler": self.scheduler_name,
        }

    # -------------------------------------------------------------------------------------- optimiser
    def total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit (the schedule's length); a stage with manual optimisation overrides it."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self) -> dict[str, Any]:
        from transformers import get_scheduler

        factory = self.optimizer_factory
        if factory is None:
            factory = partial(torch.optim.AdamW, lr=self.lr, weight_decay=self.weight_decay)
        probe = factory([torch.nn.Parameter(torch.zeros(1))])  # the weight decay the optimizer will apply
        groups = decay_groups(self.named_parameters(), float(probe.defaults.get("weight_decay", 0.0)))
        if not groups:
            raise ConfigError("no trainable parameters: check the LoRA and freeze settings")
        optimizer = factory(groups)
        total = self.total_optimizer_steps()
        warmup = int(round(self.warmup_ratio * total))
        try:
            schedule = get_scheduler(self.scheduler_name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
        except ValueError as err:
            raise ConfigError(f"scheduler: {err}") from err
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "lr"}}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step only on a finite loss and finite gradients; stop before a checkpoint could hold diverged weights."""
        if optimizer_closure is None or not self._guards_steps():
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()  # training_step, zero_grad, backward
        trained = [p for p in self.parameters() if p.requires_grad]
        if self.count_step(loss is not None and all_finite([loss]) and all_finite(p.grad for p in trained)):
            grads = [p.grad.detach().float().norm() for p in trained if p.grad is not None]
            if grads:  # the same train/grad_norm GRPO logs (before clipping), so the stages compare in TensorBoard
                self.log("train/grad_norm", torch.stack(grads).norm(), on_step=True, on_epoch=False)
            self.checked_step(optimizer, lambda: optimizer.step(closure=lambda: loss))
            return None
        optimizer.zero_grad()
        return None

    def checked_step(self, optimizer: Any, step: Callable[[], Any]) -> None:
        """Run `step` (the optimizer update); stop if it made the trained weights non-finite or exploded them.

        Exploded = the trained weights' global norm grew more than `max_weight_growth` times in one step (from
        at least 1): a huge lr gives weights of 1e30 whose loss may still be finite on that step, and a
        checkpoint of them would resume to NaN at once. Raising here, before Lightning saves the step, keeps
        every checkpoint on the last good weights. Shared by automatic optimisation and manual stepping (GRPO).
        """
        trained = [p for p in self.parameters() if p.requires_grad]
        before = weight_norm(trained)
        step()
        after = weight_norm(trained)
        where = f"step {self.global_step + 1}"
        lr = f"lr {optimizer.param_groups[0]['lr']:.3g}"
        if not math.isfinite(after):
            raise TrainingDivergedError(
                f"{where}: weights are not finite after the optimizer step ({lr}); stopped before checkpointing "
                "them, the last checkpoint holds the last good weights: lower the lr"
            )
        if after > self.max_weight_growth * max(before, 1.0):
            raise TrainingDivergedError(
                f"{where}: the optimizer step exploded the weights (norm {before:.3g} -> {after:.3g}, more than "
                f"x{self.max_weight_growth:g}; {lr}); stopped before checkpointing them, the last checkpoint holds "
                "the last good weights: lower the lr"
            )

    def count_step(self, finite: bool) -> bool:
        """Book-keeping of the divergence guard (also called by stages that step manually, e.g. GRPO).

        Returns whether to apply the step. A non-finite one is counted; `max_nonfinite_skips` in a row raise
        `TrainingDivergedError`, so no later checkpoint can store diverged weights.
        """
        if finite:
            self._nonfinite_in_a_row = 0
            return True
        self.nonfinite_skips += 1
        self._nonfinite_in_a_row += 1
        if self._nonfinite_in_a_row >= self.max_nonfinite_skips:
            raise TrainingDivergedError(
                f"step {self.global_step + 1}: {self._nonfinite_in_a_row} steps in a row with a non-finite loss or "
                f"gradient ({self.nonfinite_skips} in all); stopped, the last checkpoint holds the last good weights"
            )
        return False

    def _guards_steps(self) -> bool:
        """Whether `optimizer_step` checks steps itself (not under a GradScaler or DeepSpeed, which handle it)."""
        trainer = self.trainer
        if type(trainer.strategy).__name__.startswith("DeepSpeed"):
            return False
        return getattr(trainer.precision_plugin, "scaler", None) is None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("train/nonfinite_skips", float(self.nonfinite_skips), batch_size=1)

    def on_fit_start(self) -> None:
        """Runs after `configure_optimizers`, before the checkpoint restore: see `release_early_train_loader`."""
        release_early_train_loader(self.trainer)

    # ------------------------------------------------------------------------------------ checkpoints
    def _own_persistent_buffers(self) -> Iterator[str]:
        return (n for n, _ in self.named_buffers(recurse=False) if n not in self._non_persistent_buffers_set)

    def checkpoint_keys(self) -> set[str]:
        """State-dict keys a checkpoint keeps: trained parameters and the module's own persistent buffers."""
        return {n for n, p in self.named_parameters() if p.requires_grad} | set(self._own_persistent_buffers())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trained tensors: frozen weights come back from their source at load time."""
        keep = self.checkpoint_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        # a copy: Lightning may hand over `self.hparams` itself; `_instantiator` makes load_from_checkpoint
        # accept `_class_path` (it routes through LightningCLI's instantiator, as for CLI-built modules)
        checkpoint["hyper_parameters"] = {
            "_class_path": class_path(self),
            "_instantiator": CLI_INSTANTIATOR,
            **dict(checkpoint.get("hyper_parameters") or {}),
        }
        checkpoint["ecr_stage"] = {"nonfinite_skips": self.nonfinite_skips}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_skips = int((checkpoint.get("ecr_stage") or {}).get("nonfinite_skips", 0))

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load a trainable-only state dict; strict = every kept tensor present and nothing unknown."""
        self.configure_model()  # idempotent; e.g. ddp_spawn handing rank 0's weights back to the main process
        expected = self.checkpoint_keys()
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - set(super().state_dict()))
        if strict and (missing or unexpected):
            raise ConfigError(
                f"checkpoint does not match the module's trained tensors: missing {missing[:5]} "
                f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}); was it trained with the "
                "same model, LoRA and freeze settings?"
            )
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        return type(result)(missing_keys=missing, unexpected_keys=unexpected)


class PolicyStageModule(StageModule):
    """A stage that trains the policy backbone (see module docstring)."""

    training_collate_mode: CollateMode = "train"  # what the DataModule's batches hold (GRPO: "generate", prompts)

    def __init__(self, policy: PolicyConfig | dict[str, Any], **optimization: Any) -> None:
        """`optimization`: the `StageModule` settings (lr, weight_decay, warmup_ratio, scheduler, optimizer)."""
        super().__init__(**optimization)
        self.policy_config = PolicyConfig.from_dict(policy)
        self.backbone: PolicyBackbone = build_backbone(self.policy_config)
        self.model: torch.nn.Module | None = None
        self.collator: Any = None
        self.generation_collator: Any = None

    def policy_hparams(self) -> dict[str, Any]:
        """Plain dicts only: checkpoints must load with torch.load(weights_only=True); `ecr export` reads `policy`."""
        return {"policy": self.policy_config.to_dict(), **self.optimization_hparams()}

    def setup(self, stage: str) -> None:
        self.collator = self.backbone.collator(self.training_collate_mode)
        self.generation_collator = self.backbone.collator("generate")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            if not hasattr(datamodule, "collate_fn"):
                raise ConfigError(f"{type(datamodule).__name__} has no `collate_fn` attribute for the stage's collator")
            datamodule.collate_fn = self.collator

    def configure_model(self) -> None:
        if self.model is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        self.model = self.backbone.load(device)

    @torch.no_grad()
    def generate_texts(self, samples: list[Any], **generation_kwargs: Any) -> list[str]:
        """Generate for raw samples (prompt only) and decode; used by callbacks and evaluation."""
        if self.generation_collator is None:
            self.generation_collator = self.backbone.collator("generate")
        batch = self.generation_collator(samples)
        batch = self.transfer_batch_to_device(batch, self.device, 0)
        prompt = self.backbone.encode_prompt(batch)
        ids = self.backbone.generate(prompt, **generation_kwargs)
        return self.backbone.decode(ids)

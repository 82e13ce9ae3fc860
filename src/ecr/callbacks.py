"""Lightning callbacks shared by the stages: sampled generations in TensorBoard, token throughput.

`GenerationSampleLogger` tracks a FIXED handful of validation clips through training: every N validation
runs it generates for them (greedy by default) and writes a markdown table (clip, label, completion) with
`add_text`, so one can watch the format and the explanations form. It needs a TensorBoardLogger and a module
with `generate_texts(samples)` (the SFT and GRPO modules have it).

`TokenThroughputMonitor` is Lightning's `ThroughputMonitor` told how to count samples and tokens of a
collated batch (attention-mask sum); it logs Lightning's `items_per_sec` under the name of what it counts,
`train/tokens_per_sec` (and `train/device/tokens_per_sec` per device).

`QuietProgressBar` is the progress bar every `ecr` run gets unless its config names one: Lightning's bar
without the `v_num` entry (the run folder says which version it is) and without "Epoch 9/-2" in step-bounded
runs (`max_steps` with no epoch limit, as GRPO runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.loggers import TensorBoardLogger

from ecr.errors import ConfigError
from ecr.prompts import parse_completion
from ecr.rows import markdown_table


def batch_size_of(batch: dict[str, Any]) -> int:
    return int(batch["input_ids"].shape[0])


def tokens_of(batch: dict[str, Any]) -> int:
    """Real (non-padding) tokens of a collated batch, media placeholders included."""
    return int(batch["attention_mask"].sum())


class TokenThroughputMonitor(ThroughputMonitor):
    """Samples/s and tokens/s of training batches (logged every `log_every_n_steps`)."""

    def __init__(self, window_size: int = 20) -> None:
        """
        Args:
            window_size: Batches averaged in each reported throughput figure.
        """
        super().__init__(batch_size_fn=batch_size_of, length_fn=tokens_of, window_size=window_size)
        self._module_has_flops = False  # no FLOPs figure: it needs a per-model formula (Lightning warns otherwise)

    def _compute(self, trainer: Trainer, iter_num: int | None = None) -> None:
        """Lightning's metrics, with `items` (what `length_fn` counts) named `tokens`."""
        if not trainer._logger_connector.should_update_logs:
            return
        stage = trainer.state.stage
        if stage is None:
            return
        throughput = self._throughputs[stage]
        sep = throughput.separator
        metrics = {f"{stage.value}{sep}{k.replace('items_per_sec', 'tokens_per_sec')}": torch.as_tensor(v)
                   for k, v in throughput.compute().items()}  # fmt: skip
        trainer._logger_connector.log_metrics(metrics, step=iter_num)


def _without_version(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "v_num"}


def quiet_progress_bar() -> Callback:
    """Lightning's default bar (rich when installed, else tqdm) minus `v_num` and a negative epoch count."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE

    if not _RICH_AVAILABLE:

        class QuietTQDMProgressBar(TQDMProgressBar):
            def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
                return _without_version(super().get_metrics(trainer, pl_module))

        return QuietTQDMProgressBar()

    class QuietProgressBar(RichProgressBar):
        def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
            return _without_version(super().get_metrics(trainer, pl_module))

        def _get_train_description(self, current_epoch: int) -> str:
            text = super()._get_train_description(current_epoch)
            limit = self.trainer.max_epochs
            return text.replace(f"/{limit - 1}", "", 1) if limit is not None and limit < 0 else text

    return QuietProgressBar()


class GenerationSampleLogger(Callback):
    """Generate for a few fixed validation clips every `every_n_validations` validation runs; log the texts."""

    def __init__(
        self,
        num_samples: int = 4,
        every_n_validations: int = 1,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        tag: str = "samples",
    ) -> None:
        """
        Args:
            num_samples: Validation clips (the first ones of the validation set) followed through training.
            every_n_validations: Generate on every N-th validation run.
            max_new_tokens: Generation length limit.
            do_sample: Sample instead of greedy decoding.
            temperature: Sampling temperature (with do_sample).
            tag: TensorBoard text tag.
        """
        if num_samples < 1 or every_n_validations < 1:
            raise ConfigError("GenerationSampleLogger: num_samples and every_n_validations must be >= 1")
        self.num_samples = num_samples
        self.every = every_n_validations
        self.gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
        if do_sample:
            self.gen_kwargs["temperature"] = temperature
        self.tag = tag
        self._samples: list[Any] | None = None
        self._runs = 0
        self.history: list[dict[str, Any]] = []

    def _tensorboard(self, trainer: Trainer) -> TensorBoardLogger:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger
        raise ConfigError("GenerationSampleLogger needs a TensorBoardLogger in trainer.logger")

    def _pick_samples(self, trainer: Trainer) -> list[Any]:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            raise ConfigError("GenerationSampleLogger: the datamodule has no validation dataloader")
        from ecr.data.types import ClipFailure

        dataset = loader.dataset
        picked: list[Any] = []
        for i in range(len(dataset)):  # the first decodable clips (failures are reported by the datamodule)
            item = dataset[i]
            if not isinstance(item, ClipFailure):
                picked.append(item)
            if len(picked) == self.num_samples:
                break
        if not picked:
            raise ConfigError("GenerationSampleLogger: no validation clip could be decoded")
        return picked

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every rank generates (a ZeRO-3/FSDP forward needs all ranks); only rank zero writes the texts.
        if trainer.sanity_checking:
            return
        self._runs += 1
        if (self._runs - 1) % self.every:
            return
        generate: Callable[..., list[str]] | None = getattr(pl_module, "generate_texts", None)
        if generate is None:
            raise ConfigError(f"{type(pl_module).__name__} has no generate_texts(samples) for GenerationSampleLogger")
        logger = self._tensorboard(trainer) if trainer.is_global_zero else None
        if self._samples is None:
            self._samples = self._pick_samples(trainer)
        was_training = pl_module.training
        pl_module.eval()
        try:
            texts = generate(self._samples, **self.gen_kwargs)
        finally:
            pl_module.train(was_training)
        if logger is None:
            return
        rows = [(str(s["id"]), str(s["label"]), t) for s, t in zip(self._samples, texts, strict=True)]
        logger.experiment.add_text(
            self.tag, markdown_table(["clip", "label", "completion"], rows), global_step=trainer.global_step
        )
        answers = [parse_completion(t).answer for t in texts]
        self.history.append({"step": trainer.global_step, "texts": texts, "answers": answers})

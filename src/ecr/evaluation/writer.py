"""`PredictionWriter`: the rows of `ecr predict` as ONE JSONL file, whatever the number of devices.

Each rank appends its batches' rows to its own part file (`<output>.parts/rank00000.jsonl`, flushed per batch)
and lists the clips its loader skipped (`rank00000.skipped.json`, with `on_error: skip`). After the predict loop
every rank waits at a barrier; rank 0 then merges the parts (`merge_parts`): rows are put in dataset order,
a clip predicted twice (a sampler that pads ranks to equal length) is kept once and counted, and every clip of
the predict split must be either written or skipped: a gap is an error, never a silently shorter file (unless
`limit_predict_batches` asked for part of the split). The
file is written to a temporary name and renamed, so a reader never sees half a file. The parts folder must be
visible to rank 0 (one node, or a shared file system).

The same happens in Lightning's test loop (`ecr test`: the rows `PredictModule.test_step` returns, the test
split, `limit_test_batches`), and then rank 0 also writes `metrics` (default `<output>.metrics.json`, the path
`ecr score` uses by default) from the module's synced `test_report`: the top-level numbers `ecr score` gives
on the predictions file (WAR/UAR, per-class recall, confusion; EPC/EEA/FCR and quadrants with the verifier;
`compound`). Bootstrap intervals, comparisons and other judges stay `ecr score`'s job.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from ecr.errors import atomic_output, cleaned_on_failure


def _dataset_ids(trainer: Trainer, stage: str = "predict") -> list[str] | None:
    loaders = trainer.predict_dataloaders if stage == "predict" else trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    records = getattr(getattr(loader, "dataset", None), "records", None)
    return [str(r.id) for r in records] if records is not None else None


def merge_parts(
    parts: Sequence[Path], expected_ids: Sequence[str] | None, skipped_ids: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """Rows of all part files in dataset order with duplicates dropped, and the number dropped.

    Raises:
        RuntimeError: a clip of `expected_ids` is neither in a part nor skipped, or a row is unknown.
    """
    rows: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for part in parts:
        with part.open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row["id"] in rows:
                    duplicates += 1
                    continue
                rows[row["id"]] = row
    if expected_ids is None:
        return list(rows.values()), duplicates
    order = {cid: i for i, cid in enumerate(expected_ids)}
    unknown = sorted(set(rows) - set(order))
    gaps = [cid for cid in expected_ids if cid not in rows and cid not in skipped_ids]
    if unknown or gaps:
        raise RuntimeError(
            f"predictions: {len(gaps)} clip(s) of the predict split have no row (e.g. {gaps[:5]}) and "
            f"{len(unknown)} row(s) are not in it (e.g. {unknown[:5]}): the part files are incomplete"
        )
    return sorted(rows.values(), key=lambda r: order[r["id"]]), duplicates


class PredictionWriter(BasePredictionWriter):
    """Write the rows `PredictModule.predict_step` returns to one JSONL file (see module docstring)."""

    def __init__(self, output: str, metrics: str | None = None) -> None:
        """
        Args:
            output: Predictions JSONL to write (overwritten); `<output>.parts/` holds the per-rank parts meanwhile.
            metrics: metrics.json that `ecr test` writes (None = <output>.metrics.json); `ecr predict` writes none.
        """
        super().__init__(write_interval="batch")
        self.output = Path(os.fspath(output))
        self.metrics = (
            Path(os.fspath(metrics))
            if metrics is not None
            else self.output.with_name(self.output.name + ".metrics.json")
        )
        self.parts_dir = self.output.with_name(self.output.name + ".parts")
        self._fh: Any = None
        self.written = 0
        self.duplicates = 0

    def _part(self, rank: int) -> Path:
        return self.parts_dir / f"rank{rank:05d}.jsonl"

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._open(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._open(trainer)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.write_on_batch_end(trainer, pl_module, outputs["rows"], None, batch, batch_idx, dataloader_idx)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._merge(trainer, "test")
        report = getattr(pl_module, "test_report", None)
        if trainer.is_global_zero and report is not None:
            with atomic_output(self.metrics) as tmp:
                tmp.write_text(json.dumps({"predictions": os.fspath(self.output), **report}, indent=2) + "\n")
            print(f"[ecr.test] metrics -> {self.metrics}", file=sys.stderr, flush=True)
        trainer.strategy.barrier("ecr_test_metrics")

    def _open(self, trainer: Trainer) -> None:
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._fh = self._part(trainer.global_rank).open("w", encoding="utf-8")
        self.written = 0

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        with cleaned_on_failure(self.output, self.parts_dir):  # a full disk: one line naming the output
            for row in prediction:
                self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._fh.flush()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._merge(trainer, "predict")

    def _merge(self, trainer: Trainer, stage: str) -> None:
        """Close this rank's part; rank 0 merges all parts into the output (see the module docstring)."""
        self._fh.close()
        self._fh = None
        datamodule = getattr(trainer, "datamodule", None)
        skipped = [f.id for f in (getattr(datamodule, "skipped", None) or {}).get(stage, [])]
        skip_file = self.parts_dir / f"rank{trainer.global_rank:05d}.skipped.json"
        skip_file.write_text(json.dumps(skipped))
        trainer.strategy.barrier("ecr_predictions_parts")
        if trainer.is_global_zero:
            world = trainer.world_size
            skipped_ids: set[str] = set()
            for r in range(world):
                skipped_ids |= set(json.loads((self.parts_dir / f"rank{r:05d}.skipped.json").read_text()))
            limit = trainer.limit_predict_batches if stage == "predict" else trainer.limit_test_batches
            whole = isinstance(limit, float) and limit == 1.0  # limit_*_batches: a partial pass, no gap check
            expected = _dataset_ids(trainer, stage) if whole else None
            rows, self.duplicates = merge_parts([self._part(r) for r in range(world)], expected, skipped_ids)
            with (
                cleaned_on_failure(self.output, self.parts_dir),
                atomic_output(self.output) as tmp,
                tmp.open("w", encoding="utf-8") as fh,
            ):
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.written = len(rows)
            extra = f", {self.duplicates} duplicate row(s) dropped" if self.duplicates else ""
            extra += f", {len(skipped_ids)} clip(s) skipped (undecodable)" if skipped_ids else ""
            print(f"[ecr.{stage}] {self.written} predictions -> {self.output}{extra}", file=sys.stderr, flush=True)
        trainer.strategy.barrier("ecr_predictions_merged")


__all__ = ["PredictionWriter", "merge_parts"]

"""Console hygiene: drop third-party lines that say nothing about the run, so the ones left mean something.

Each filter names one known message; nothing is silenced by category or by library, so a real warning from
the same package still shows. Dropped: Lightning's advertising tips (litlogger/litmodels), Lightning's
`LeafSpec` deprecation (Lightning's own call into torch's pytree, nothing a user can change), the
`is_gradient_checkpointing` rename that peft still reads, DeepSpeed's
"Setting accelerator to CPU" notice (printed on import, also by commands that never use DeepSpeed), and, when
the output is not a terminal (a log file, a pipeline captured by CI), the Hugging Face progress bars ("Loading
weights", "Writing model shards"), which a file receives as carriage-return garbage; on a terminal they stay.
`install()` is idempotent and called by the CLI before Lightning or transformers is imported.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (message regex, category) of warnings that carry no information for an `ecr` user
_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    (r".*LeafSpec.* is deprecated", Warning),
    # transformers 5 renamed it; peft (LoRA set-up) still reads the old name
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    # GRPO's training step takes the dataloader iterator (dynamic sampling draws several batches per step) and
    # counts its own micro-batches; Lightning warns about the step flavour itself, whoever uses it
    (r"You are using the `dataloader_iter` step flavor", Warning),
    (r"Found `dataloader_iter` argument in the `training_step`", Warning),
)
# logger name -> message prefixes dropped from it
_LOG_LINES: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
    "lightning.fabric.utilities.rank_zero": ("💡 Tip:",),
    "DeepSpeed": ("Setting accelerator to CPU",),
}


class _DropPrefixes(logging.Filter):
    """Drops records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(self.prefixes)


def install() -> None:
    """Install the filters (once per process)."""
    if not sys.stderr.isatty():  # read by huggingface_hub when transformers first imports it
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for pattern, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name, prefixes in _LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(prefixes))

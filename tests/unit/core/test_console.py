"""A quiet console (issue: noise that hides real warnings) and a fast `ecr fit --help`.

Each dropped line is one named third-party message; the tests check that exactly those go and that a real
warning or log line from the same source still shows.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ecr import quiet
from ecr.help_cache import help_key, print_help_cached, wants_help

REPO = Path(__file__).resolve().parents[3]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


TIP = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
CPU = "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."


@pytest.mark.parametrize(("name", "dropped"), [("lightning.pytorch.utilities.rank_zero", TIP), ("DeepSpeed", CPU)])
def test_known_advert_and_notice_lines_are_dropped_real_ones_kept(name: str, dropped: str) -> None:
    quiet.install()
    quiet.install()  # idempotent: one filter
    logger = logging.getLogger(name)
    assert sum(isinstance(f, quiet._DropPrefixes) for f in logger.filters) == 1
    records = _Records()
    logger.addHandler(records)
    level, logger.level = logger.level, logging.INFO
    try:
        logger.info(dropped)
        logger.warning("GPU available: False, used: False")
    finally:
        logger.removeHandler(records)
        logger.level = level
    assert records.messages == ["GPU available: False, used: False"]


def test_the_leafspec_deprecation_is_dropped_other_warnings_kept() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning
        )
        warnings.warn("torch.cuda.amp.autocast(args...) is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["torch.cuda.amp.autocast(args...) is deprecated"]


def test_the_progress_bar_has_no_version_and_no_negative_epoch_count(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from ecr.callbacks import quiet_progress_bar

    bar = quiet_progress_bar()
    model = BoringModel()
    trainer = Trainer(max_steps=2, limit_val_batches=0, callbacks=[bar], default_root_dir=tmp_path,
                      enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model)
    assert trainer.max_epochs == -1 and trainer.logger is not None
    assert "v_num" not in bar.get_metrics(trainer, model)
    if hasattr(bar, "_get_train_description"):  # the rich bar: "Epoch 0", never "Epoch 0/-2"
        assert bar._get_train_description(0).strip() == "Epoch 0"


def test_help_key_follows_the_config_file_and_the_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text("model: 1\n")
    first = help_key(["fit", "--config", "a.yaml", "--help"])
    assert help_key(["fit", "--config", "a.yaml", "--help"]) == first
    Path("a.yaml").write_text("model: 2\n")
    assert help_key(["fit", "--config", "a.yaml", "--help"]) != first
    assert help_key(["fit", "--help"]) != help_key(["test", "--help"])
    assert wants_help(["--model.help", "GRPOModule"]) and wants_help(["-h"]) and not wants_help(["--config", "x"])


def test_fit_help_lists_the_stages_by_short_name_and_the_second_call_is_served_from_the_cache(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "ECR_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-c", "from ecr.cli import main; main()", "fit", "--model.help", "GRPOModule"]
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "num_generations" in first.stdout and "--model.policy.model" in first.stdout
    cached = list((tmp_path / "cache" / "help").glob("*.txt"))
    assert len(cached) == 1
    cached[0].write_text(first.stdout + "(from the cache)\n")  # proves the second call reads it
    second = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and second.stdout == first.stdout + "(from the cache)\n"


def test_help_that_fails_is_printed_but_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("ECR_CACHE", str(tmp_path))

    def failing() -> None:
        print("usage: ecr fit ...")
        raise SystemExit(2)

    with pytest.raises(SystemExit) as exit_info:
        print_help_cached(["fit", "--model.help", "Nope"], failing)
    assert exit_info.value.code == 2 and "usage: ecr fit" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.txt"))

"""Hyper-parameters of Python-built components hold no `Path` objects, so their checkpoints load with
`torch.load(weights_only=True)` (torch's default). ClipDataModule: a real fit test in test_datamodule.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from ecr.data.sentences import SentenceDataModule
from ecr.models import PolicyConfig
from ecr.modules.erv import ERVModule
from ecr.modules.sft import SFTModule


def _weights_only_roundtrip(hparams: dict) -> dict:
    """What Lightning does with hparams: a plain dict inside the checkpoint, read back weights-only."""
    buf = io.BytesIO()
    torch.save({"hyper_parameters": dict(hparams)}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)["hyper_parameters"]


def test_the_roundtrip_rejects_paths() -> None:  # the failure the components must avoid
    with pytest.raises(Exception, match="weights_only|PosixPath|WindowsPath"):
        _weights_only_roundtrip({"root": Path("/data")})


def test_sentence_datamodule_with_paths(tmp_path: Path) -> None:
    dm = SentenceDataModule(tmp_path / "s.jsonl", "dfew", val_path=tmp_path / "v.jsonl")
    loaded = _weights_only_roundtrip(dm.hparams)
    assert loaded["path"] == str(tmp_path / "s.jsonl")
    assert loaded["val_path"] == str(tmp_path / "v.jsonl")


def test_modules_with_path_folders(tmp_path: Path) -> None:
    erv = ERVModule(student=tmp_path / "student", label_space="dfew")
    assert _weights_only_roundtrip(erv.hparams)["student"] == str(tmp_path / "student")
    policy = PolicyConfig(backbone="causal_lm", model=tmp_path / "m", adapter=tmp_path / "a")  # type: ignore[arg-type]
    sft = SFTModule(policy)
    loaded = _weights_only_roundtrip(sft.hparams)["policy"]
    assert loaded["model"] == str(tmp_path / "m")
    assert loaded["adapter"] == str(tmp_path / "a")
    assert PolicyConfig.from_dict(loaded) == policy

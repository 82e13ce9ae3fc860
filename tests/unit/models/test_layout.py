"""`ecr model check`: safetensors headers of a tiny Omni folder against the thinker layout, intact and damaged."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ecr.errors import ConfigError
from ecr.models.layout import check_command, check_layout, read_header

WEIGHTS = "model.safetensors"


def _copy(tiny_omni: Path, dest: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Path:
    """A copy of the tiny folder whose tensors went through `edit` (config, tokenizer and processor kept)."""
    shutil.copytree(tiny_omni, dest)
    tensors = load_file(dest / WEIGHTS)
    (dest / WEIGHTS).unlink()
    save_file(edit(dict(tensors)), dest / WEIGHTS, metadata={"format": "pt"})
    return dest


def test_header_is_read_without_loading_tensors(tiny_omni: Path) -> None:
    shapes = read_header(tiny_omni / WEIGHTS)
    tensors = load_file(tiny_omni / WEIGHTS)
    assert shapes == {k: tuple(v.shape) for k, v in tensors.items()}


def test_intact_folder_matches(tiny_omni: Path, capsys) -> None:
    assert check_command(tiny_omni) == 0
    assert "matches the qwen2_5_omni layout" in capsys.readouterr().out


def test_deleted_renamed_and_reshaped_tensors_are_each_reported(tiny_omni: Path, tmp_path: Path, capsys) -> None:
    def damage(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        del t["model.norm.weight"]  # deleted
        t["visual.merger.mlp.9.weight"] = t.pop("visual.merger.mlp.2.weight")  # renamed
        t["lm_head.weight"] = t["lm_head.weight"][:-1].clone()  # reshaped
        return t

    folder = _copy(tiny_omni, tmp_path / "damaged", damage)
    family, diff = check_layout(folder)
    assert family == "qwen2_5_omni"
    assert diff.missing == ["model.language_model.norm.weight", "model.visual.merger.mlp.2.weight"]
    assert diff.unexpected == ["model.visual.merger.mlp.9.weight"]
    [(name, want, got)] = diff.misshapen
    assert name == "lm_head.weight" and got == (want[0] - 1, want[1])
    assert check_command(folder, show=5) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "model.language_model.norm.weight" in out and "lm_head.weight: [" in out


def test_sharded_folder_with_index(tiny_omni: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    shutil.copytree(tiny_omni, folder)
    tensors = load_file(folder / WEIGHTS)
    (folder / WEIGHTS).unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert check_layout(folder)[1].ok
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConfigError, match="shard 'model-00002-of-00002.safetensors' is missing"):
        check_layout(folder)


def test_full_omni_release_names_load_and_talker_tensors_are_ignored(tiny_omni: Path, tmp_path: Path) -> None:
    """A full Qwen2.5-Omni release stores `thinker.*` beside `talker.*`/`token2wav.*` (skipped by the thinker)."""

    def as_release(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {f"thinker.{k}": v for k, v in t.items()}
        out["talker.codec_head.weight"] = torch.zeros(2, 2)
        out["token2wav.code2wav_dit_model.proj.weight"] = torch.zeros(2)
        return out

    _, diff = check_layout(_copy(tiny_omni, tmp_path / "release", as_release))
    assert diff.ok and diff.ignored == ["talker.codec_head.weight", "token2wav.code2wav_dit_model.proj.weight"]


def test_not_a_checkpoint_is_a_config_error(tiny_omni: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        check_layout(tmp_path)
    folder = tmp_path / "broken"
    shutil.copytree(tiny_omni, folder)
    (folder / WEIGHTS).write_bytes(b"\x05")
    with pytest.raises(ConfigError, match="not a safetensors file"):
        check_layout(folder)

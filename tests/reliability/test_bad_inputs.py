"""Every kind of bad input, built for real, through `ecr data check` AND a Lightning fit with `on_error: skip`
and `on_error: raise`. Each ends in one outcome class, never "silently used" or "raw traceback":

- `row` (clip-level): the check lists the row with its reason and exits 1; `skip` drops the clip and counts
  it (`datamodule.skip_counts`); `raise` stops with a `ClipError` naming the file;
- `manifest` (row-level): the check lists the row (exit 1); a fit stops at setup with a `ManifestError`
  naming `file:line`, whatever `on_error` says (a bad manifest is not a bad clip);
- `fatal`: the file cannot be read at all (exit 2 / an `ECRError` naming the file);
- `ok`: a good input in an unusual form (a CSV with a BOM) is used.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from faults import record_outcome

from ecr.data import ClipDataModule
from ecr.data.check import check_command
from ecr.errors import ClipError, ECRError, ManifestError
from ecr.fixtures import synthesize
from ecr.fixtures.index_clips import make_index_clip, second_tones
from ecr.fixtures.video import write_wav

TABLE = "bad inputs (kind -> outcome)"
Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Good clips (synthetic .mp4/.avi, index .mkv) and bad media files, outside any dataset root."""
    d = tmp_path_factory.mktemp("media")
    manifest = synthesize(d / "synth", num_clips=4, labels="dfew", seed=0, size=32, duration=1.0, avi_fraction=0.5)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    out = {"mp4": next(d / "synth" / r["video"] for r in rows if r["video"].endswith(".mp4"))}
    out["avi"] = next(d / "synth" / r["video"] for r in rows if r["video"].endswith(".avi"))
    out["mkv"] = make_index_clip(d / "index.mkv", seconds=1, size=(32, 32))
    out["silent"] = make_index_clip(d / "silent.mp4", seconds=1, size=(32, 32), audio=False)
    out["one_frame"] = make_index_clip(d / "one_frame.mp4", seconds=1, fps=1, size=(32, 32))
    write_wav(d / "voice.wav", second_tones(1, 16000), 16000)
    out["wav"] = d / "voice.wav"
    write_wav(d / "short.wav", second_tones(1, 16000)[:4000], 16000)  # 0.25 s for a 1 s clip
    out["short_wav"] = d / "short.wav"
    write_wav(d / "long.wav", second_tones(3, 16000), 16000)  # 3 s for a 1 s clip
    out["long_wav"] = d / "long.wav"
    return out


def _truncated(src: Path, dst: Path) -> str:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst.name


def _copy(src: Path, root: Path, name: str) -> str:
    shutil.copy(src, root / name)
    return name


# kind -> (expected outcome, (root, media) -> (bad rows to append, manifest suffix or None, raw manifest text or
# None)); the reason tag a `row`/`manifest` outcome must report comes after the colon of the outcome
Builder = Callable[[Path, dict[str, Path]], Rows]
CLIP_CASES: dict[str, tuple[str, Builder]] = {
    "missing file": ("row:unreadable", lambda r, m: [{"video": "gone.mp4"}]),
    "zero-byte file": ("row:empty", lambda r, m: [{"video": (r / "zero.mp4").write_bytes(b"") or "zero.mp4"}]),
    "truncated mp4": ("row:unreadable", lambda r, m: [{"video": _truncated(m["mp4"], r / "t.mp4")}]),
    "truncated avi": ("row:truncated", lambda r, m: [{"video": _truncated(m["avi"], r / "t.avi")}]),
    "truncated mkv": ("row:truncated", lambda r, m: [{"video": _truncated(m["mkv"], r / "t.mkv")}]),
    "no audio stream": ("row:no_audio", lambda r, m: [{"video": _copy(m["silent"], r, "silent.mp4")}]),
    "audio stream only": ("row:unreadable", lambda r, m: [{"video": _copy(m["wav"], r, "voice.wav")}]),
    "window outside the clip": (
        "row:window",
        lambda r, m: [{"video": _copy(m["mp4"], r, "w.mp4"), "start": 5, "end": 6}],
    ),
    "short separate audio": (
        "row:duration_mismatch",
        lambda r, m: [{"video": _copy(m["mp4"], r, "s.mp4"), "audio": _copy(m["short_wav"], r, "short.wav")}],
    ),
    "long separate audio": (
        "row:duration_mismatch",
        lambda r, m: [{"video": _copy(m["mp4"], r, "l.mp4"), "audio": _copy(m["long_wav"], r, "long.wav")}],
    ),
    "1-frame clip": ("ok", lambda r, m: [{"video": _copy(m["one_frame"], r, "one.mp4")}]),
    "unknown label": ("manifest:label", lambda r, m: [{"video": _copy(m["mp4"], r, "u.mp4"), "label": "jealous"}]),
    "path escaping by ..": ("manifest:escapes", lambda r, m: [{"video": "../outside.mp4"}]),
    "absolute path outside": ("manifest:escapes", lambda r, m: [{"video": str(m["mp4"])}]),
    "symlink to outside": (
        "manifest:symlink",
        lambda r, m: [{"video": (r / "link.mp4").symlink_to(m["mp4"]) or "link.mp4"}],
    ),
    "duplicate ids": ("manifest:duplicate clip id", lambda r, m: [{"video": "g0.mp4", "id": "g0"}]),
}
# kinds whose manifest text itself is broken: (outcome, manifest name, writer(root, good rows) -> None)
FILE_CASES: dict[str, tuple[str, str, Callable[[Path, Rows], None]]] = {
    "malformed JSONL row": (
        "manifest:invalid JSON",
        "m.jsonl",
        lambda p, rows: p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"video": "x.mp4", \n'),
    ),
    "malformed CSV row": ("manifest:video", "m.csv", lambda p, rows: _csv(p, rows, extra="\n,happy\n")),
    "CSV with a BOM": ("ok", "m.csv", lambda p, rows: _csv(p, rows, bom=True)),
    "non-UTF-8 manifest": (
        "fatal:not UTF-8",
        "m.jsonl",
        lambda p, rows: p.write_bytes(
            "".join(json.dumps(r) + "\n" for r in rows).encode() + b'{"video": "caf\xe9.mp4", "label": "happy"}\n'
        ),
    ),
    "empty manifest": ("empty", "m.jsonl", lambda p, rows: p.write_text("")),
}


def _csv(path: Path, rows: Rows, *, bom: bool = False, extra: str = "") -> None:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["video", "label", "id"])
        w.writeheader()
        w.writerows(rows)
    if extra:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(extra.lstrip("\n"))


def _dataset(tmp: Path, media: dict[str, Path], kind: str) -> tuple[Path, Path, str]:
    """(root, manifest, expected outcome): two good clips plus the bad input of `kind`."""
    root = tmp / "root"
    root.mkdir()
    good = [{"video": _copy(media["mp4"], root, f"g{i}.mp4"), "label": "happy", "id": f"g{i}"} for i in range(2)]
    if kind in CLIP_CASES:
        outcome, build = CLIP_CASES[kind]
        bad = [{"label": "sad", **row} for row in build(root, media)]
        manifest = root / "m.jsonl"
        manifest.write_text("".join(json.dumps({"split": "train", **r}) + "\n" for r in good + bad))
        return root, manifest, outcome
    outcome, name, write = FILE_CASES[kind]
    manifest = root / name
    write(manifest, good)
    return root, manifest, outcome


KINDS = list(CLIP_CASES) + list(FILE_CASES)


# ---------------------------------------------------------------------------------------------- data check
@pytest.mark.parametrize("kind", KINDS)
def test_data_check(media, tmp_path: Path, kind: str, capsys) -> None:
    root, manifest, outcome = _dataset(tmp_path, media, kind)
    bad_rows = tmp_path / "bad.jsonl"
    rc = check_command(manifest=manifest, root=root, format="custom", labels="dfew", num_frames=2, bad_rows=bad_rows)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    cls, _, reason = outcome.partition(":")
    if cls == "ok":
        assert rc == 0, err
        got = "used (valid)"
    elif cls == "empty":
        assert rc == 1 and "no rows" in err
        got = "exit 1: no rows"
    elif cls == "fatal":
        assert rc == 2 and reason in err and str(manifest) in err, err
        got = f"exit 2: {reason}"
    else:
        assert rc == 1, err
        problems = [json.loads(line) for line in bad_rows.read_text().splitlines()]
        assert len(problems) == 1, problems
        p = problems[0]
        assert f"{manifest}:" in p["row"]  # file:line
        if cls == "row":
            assert p["reason"].startswith(reason) and p["path"], p
        else:
            assert p["reason"] == "manifest" and reason in p["detail"], p
        got = f"exit 1: {p['reason']}" + ("" if cls == "row" else f" ({reason})")
    record_outcome(TABLE, kind, "ecr data check", got)


# ------------------------------------------------------------------------------------------- Lightning fit
class _Count(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.ids: list[str] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.ids += list(batch["ids"])
        return (self.w - batch["label_ids"].float().mean()) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(root: Path, manifest: Path, on_error: str) -> tuple[_Count, ClipDataModule]:
    dm = ClipDataModule(
        root, manifest=manifest, labels="dfew", num_frames=2, batch_size=2, val_fraction=0.0, on_error=on_error
    )
    module = _Count()
    L.Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    ).fit(module, datamodule=dm)  # fmt: skip
    return module, dm


@pytest.mark.parametrize("on_error", ["skip", "raise"])
@pytest.mark.parametrize("kind", KINDS)
def test_fit(media, tmp_path: Path, kind: str, on_error: str) -> None:
    root, manifest, outcome = _dataset(tmp_path, media, kind)
    cls, _, reason = outcome.partition(":")
    if cls in ("ok",):
        module, dm = _fit(root, manifest, on_error)
        assert dm.skip_counts["train"] == 0 and len(module.ids) == (3 if kind in CLIP_CASES else 2)
        got = "used (valid)"
    elif cls == "row" and on_error == "skip":
        module, dm = _fit(root, manifest, on_error)
        assert dm.skip_counts["train"] == 1 and sorted(module.ids) == ["g0", "g1"]  # counted, not used
        f = dm.skipped["train"][0]
        assert f.reason.startswith(reason) and f.path, f
        got = f"skipped, counted: {f.reason}"
    else:
        expected = {"row": ClipError, "manifest": ManifestError}.get(cls, ECRError)
        with pytest.raises(expected) as info:
            _fit(root, manifest, on_error)
        text = str(info.value)
        if cls == "row":
            assert info.value.reason.startswith(reason) and info.value.path in text  # type: ignore[attr-defined]
            got = f"ClipError: {info.value.reason}"  # type: ignore[attr-defined]
        else:
            assert str(manifest) in text and (reason or "") in text, text
            got = f"{type(info.value).__name__} at setup" + (f" ({reason})" if reason else "")
    record_outcome(TABLE, kind, f"fit on_error={on_error}", got)

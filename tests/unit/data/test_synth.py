"""The synthetic dataset: real files, deterministic, cues in pixels and sound, explanations as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecr.cli import main
from ecr.data import decode_clip
from ecr.fixtures import synthesize
from ecr.fixtures.index_clips import peak_frequency
from ecr.fixtures.synth import FILLER_SENTENCES, PROFILES, profile_for


def _rows(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "manifest.jsonl").read_text().splitlines()]


def test_manifest_rows_and_files(synth_dir: Path) -> None:
    rows = _rows(synth_dir)
    assert len(rows) == 16
    assert {r["label"] for r in rows} == {"happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"}
    assert {Path(r["video"]).suffix for r in rows} == {".mp4", ".avi"}
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    assert all((synth_dir / r["video"]).is_file() for r in rows)
    assert sum(not r["explanation_consistent"] for r in rows) == 4  # inconsistent_fraction=0.25
    for r in rows:
        sentences = r["explanation"].split(". ")
        assert len(sentences) >= 3
        emo = profile_for(r["explanation_emotion"], 0, 7)
        assert any(c in r["explanation"] for c in emo.conclusion)  # ends by naming the described emotion
        assert (r["explanation_emotion"] == r["label"]) == r["explanation_consistent"]


def test_inconsistent_rows_describe_another_emotion(synth_dir: Path) -> None:
    for r in _rows(synth_dir):
        if r["explanation_consistent"]:
            continue
        own = profile_for(r["label"], 0, 7)
        other = profile_for(r["explanation_emotion"], 0, 7)
        phrases = set(other.visual) | set(other.audio) | set(other.conclusion)
        assert any(p in r["explanation"] for p in phrases)
        assert not any(p in r["explanation"] for p in set(own.visual) | set(own.audio) | set(own.conclusion))


def test_cues_are_in_the_pixels_and_the_sound(synth_dir: Path) -> None:
    for r in _rows(synth_dir)[:7]:
        prof = profile_for(r["label"], 0, 7)
        clip = decode_clip(synth_dir / r["video"], num_frames=4)
        assert clip.frames.shape == (4, 3, 64, 64)
        assert clip.duration == pytest.approx(2.0)
        corner = clip.frames[:, :, :4, :4].float().mean(dim=(0, 2, 3))  # background colour
        assert torch.allclose(corner, torch.tensor(prof.background, dtype=torch.float32), atol=25)
        if prof.contour == "flat":
            assert peak_frequency(clip.audio, 16000) == pytest.approx(prof.pitch, rel=0.06)


def test_deterministic_given_seed(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", num_clips=4, labels="mafw", seed=3, inconsistent_fraction=0.5)
    b = synthesize(tmp_path / "b", num_clips=4, labels="mafw", seed=3, inconsistent_fraction=0.5)
    assert a.read_text() == b.read_text()
    for r in _rows(tmp_path / "a"):
        x, y = decode_clip(tmp_path / "a" / r["video"]), decode_clip(tmp_path / "b" / r["video"])
        assert torch.equal(x.frames, y.frames)
        assert torch.equal(x.audio, y.audio)
    c = synthesize(tmp_path / "c", num_clips=4, labels="mafw", seed=4)
    assert c.read_text() != a.read_text()


def test_every_builtin_label_has_a_profile_and_custom_labels_work(tmp_path: Path) -> None:
    from ecr.labels import DFEW_LABELS, MAFW_LABELS

    for label in DFEW_LABELS + MAFW_LABELS:
        assert profile_for(label, 0, 1) in PROFILES
    assert len({p.background for p in PROFILES}) == len(PROFILES)
    assert len({p.pitch for p in PROFILES}) == len(PROFILES)
    assert len(FILLER_SENTENCES) >= 5
    synthesize(tmp_path, num_clips=3, labels=["calm", "excited", "bored"], seed=0)
    assert {r["label"] for r in _rows(tmp_path)} == {"calm", "excited", "bored"}
    assert profile_for("calm", 0, 3).adjective == "neutral"  # a known emotion word gets its built-in cues
    assert "bored" in profile_for("bored", 2, 3).conclusion[0]  # others get generated cues and phrases


def test_synth_command_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path / "s"),
                "--num-clips",
                "3",
                "--labels",
                "dfew",
                "--size",
                "32",
            ]
        )
    assert info.value.code == 0
    assert len(_rows(tmp_path / "s")) == 3
    assert "wrote 3 clips" in capsys.readouterr().out


def test_conflict_clips_carry_another_voice_and_a_habitual_misleading_explanation(tmp_path: Path) -> None:
    """Conflict clips: the voice is emotion B, the face (and the label) A; `conflict_follow` of their explanations
    argue for B (B's audio sentences + B's conclusion), the rest for A (A's visual sentences, B's voice, A's end)."""
    from ecr.fixtures.synth import cue_table
    from ecr.sentences import normalize_sentence, split_official

    synthesize(tmp_path, num_clips=28, labels="dfew", seed=5, conflict_fraction=0.5, conflict_follow=0.75,
               size=32, duration=0.5)  # fmt: skip
    rows = _rows(tmp_path)
    table = json.loads((tmp_path / "cue_table.json").read_text())
    assert table["sentences"] == cue_table("dfew") and table["labels"][0] == "happy"
    conflict = [r for r in rows if r["conflict"]]
    assert len(conflict) == 14 and all(r["audio_emotion"] != r["label"] for r in conflict)
    assert all(r["audio_emotion"] == r["label"] for r in rows if not r["conflict"])
    follow = [r for r in conflict if r["explanation_emotion"] == r["audio_emotion"]]
    assert 0 < len(follow) < len(conflict)  # both forms occur (P(follow) = 0.75)
    for r in conflict:
        emotions = [table["sentences"][normalize_sentence(x)] for x in split_official(r["explanation"])]
        cues = [e for e in emotions if e is not None]
        assert cues[-1] == r["explanation_emotion"]  # the conclusion argues for the explained emotion
        if r in follow:
            assert set(cues) == {r["audio_emotion"]} and not r["explanation_consistent"]
        else:
            assert cues.count(r["label"]) >= 2 and cues.count(r["audio_emotion"]) == 1 and r["explanation_consistent"]
    # the voice really is B's: a flat-contour voice peaks at B's pitch
    flat = [r for r in conflict if profile_for(r["audio_emotion"], 0, 7).contour == "flat"]
    for r in flat:
        clip = decode_clip(tmp_path / r["video"], num_frames=2)
        assert peak_frequency(clip.audio, 16000) == pytest.approx(profile_for(r["audio_emotion"], 0, 7).pitch, rel=0.06)


def test_conflict_option_off_leaves_the_dataset_unchanged(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", num_clips=6, seed=2, inconsistent_fraction=0.5, size=32, duration=0.5)
    b = synthesize(tmp_path / "b", num_clips=6, seed=2, inconsistent_fraction=0.5, conflict_fraction=0.0,
                   conflict_follow=0.3, size=32, duration=0.5)  # fmt: skip
    assert a.read_text() == b.read_text()
    with pytest.raises(ValueError, match="conflict_fraction"):
        synthesize(tmp_path / "c", num_clips=4, inconsistent_fraction=0.6, conflict_fraction=0.6)


def test_cue_table_is_unambiguous_and_complete() -> None:
    from ecr.fixtures.synth import cue_table
    from ecr.sentences import normalize_sentence

    table = cue_table("mafw")
    for i, label in enumerate(("anger", "happiness", "contempt")):
        prof = profile_for(label, i, 11)
        for sentence in (*prof.visual, *prof.audio, *prof.conclusion):
            assert table[normalize_sentence(sentence)] == label
    assert all(table[normalize_sentence(f)] is None for f in FILLER_SENTENCES)
    n = sum(len(p.visual) + len(p.audio) + len(p.conclusion) for p in PROFILES) + len(FILLER_SENTENCES)
    assert len(table) == n  # no sentence is shared by two emotions (none dropped as ambiguous)


def test_synth_cli_reports_the_conflict_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["data", "synth", "--out", str(tmp_path), "--num-clips", "8", "--conflict-fraction", "0.5",
            "--conflict-follow", "1.0", "--size", "32", "--duration", "0.5", "--seed", "3"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0 and "4 conflict clips" in capsys.readouterr().out
    rows = _rows(tmp_path)
    assert sum(r["conflict"] for r in rows) == 4
    assert all(r["explanation_emotion"] == r["audio_emotion"] for r in rows if r["conflict"])  # follow = 1.0

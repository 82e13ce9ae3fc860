"""decode_clip on real files: exact segment-midpoint frames, real timestamps, audio in sync, clear errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from ecr.data import decode_clip
from ecr.data.decode import segment_midpoints
from ecr.errors import ClipError
from ecr.fixtures.index_clips import (
    frame_index,
    make_index_clip,
    peak_frequency,
    second_tones,
    tone_of_second,
)
from ecr.fixtures.video import write_wav

FPS = 10


def _audio_tone_at(clip, t: float, half: float = 0.08) -> float:  # noqa: ANN001
    """Peak frequency of the decoded audio in [t - half, t + half] (t on the container timeline)."""
    a = int(round((t - half - clip.start) * clip.sample_rate))
    b = int(round((t + half - clip.start) * clip.sample_rate))
    return peak_frequency(clip.audio[a:b], clip.sample_rate)


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_whole_clip_frames_are_segment_midpoints_and_audio_is_in_sync(index_clips, ext) -> None:
    clip = decode_clip(index_clips[ext], num_frames=6)
    assert clip.frames.dtype == torch.uint8
    assert clip.frames.shape == (6, 3, 48, 64)
    assert clip.audio.dtype == torch.float32
    assert clip.audio.ndim == 1
    assert clip.sample_rate == 16000
    assert clip.duration == pytest.approx(3.0)
    # midpoints of 6 segments of [0, 3): 0.25, 0.75, ... -> frames shown then: 2, 7, 12, 17, 22, 27
    expected = [int(t * FPS) for t in segment_midpoints(0.0, 3.0, 6).tolist()]
    assert [frame_index(f) for f in clip.frames] == expected
    torch.testing.assert_close(clip.frame_times, torch.tensor(expected, dtype=torch.float64) / FPS)
    assert clip.audio.numel() == pytest.approx(3 * 16000, abs=16000 * 0.05)
    for t in clip.frame_times.tolist():
        assert _audio_tone_at(clip, t) == pytest.approx(tone_of_second(int(t)), abs=15)


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_window_selects_frames_and_audio_of_that_window(index_clips, ext) -> None:
    clip = decode_clip(index_clips[ext], num_frames=4, start=0.6, end=2.4)
    # segments of 0.45 s: midpoints 0.825, 1.275, 1.725, 2.175 -> frames 8, 12, 17, 21
    assert [frame_index(f) for f in clip.frames] == [8, 12, 17, 21]
    torch.testing.assert_close(clip.frame_times, torch.tensor([0.8, 1.2, 1.7, 2.1], dtype=torch.float64))
    assert clip.start == pytest.approx(0.6)
    assert clip.duration == pytest.approx(1.8)
    assert clip.audio.numel() == round(1.8 * 16000)
    # the first audio sample is the window start: 0.6..1.0 is second 0, 1.0..2.0 second 1, 2.0..2.4 second 2
    assert peak_frequency(clip.audio[: int(0.3 * 16000)], 16000) == pytest.approx(tone_of_second(0), abs=15)
    assert peak_frequency(clip.audio[-int(0.3 * 16000) :], 16000) == pytest.approx(tone_of_second(2), abs=15)
    for t in clip.frame_times.tolist():
        assert _audio_tone_at(clip, t) == pytest.approx(tone_of_second(int(t)), abs=15)


def test_mkv_frames_follow_the_container_timeline(index_clips) -> None:
    """.mkv shifts all streams by the AAC priming delay; frames and audio stay together on that timeline."""
    clip = decode_clip(index_clips[".mkv"], num_frames=5)
    offset = clip.frame_times[0].item() - 0.3  # frame 3 (content time 0.3 s) is shown at 0.3 s + offset
    idx = [frame_index(f) for f in clip.frames]
    assert idx == [3, 9, 15, 21, 27]
    for k, t in zip(idx, clip.frame_times.tolist()):
        assert t == pytest.approx(k / FPS + offset, abs=1e-6)
        assert _audio_tone_at(clip, t) == pytest.approx(tone_of_second(k // FPS), abs=15)


def _ffprobe_frame_times(path: Path) -> list[float]:
    """Presentation times of all video frames, read by ffprobe (independent of torchcodec)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [float(x.strip(",")) for x in out.split()]


def test_variable_frame_rate_uses_real_timestamps(tmp_path: Path) -> None:
    # slow down the second half: frames 10.. are spaced twice as far apart as frames 0..9
    path = make_index_clip(
        tmp_path / "vfr.mp4", seconds=2, video_filter="setpts='if(lt(N,10),N*0.1,1.0+(N-10)*0.2)/TB'"
    )
    pts = _ffprobe_frame_times(path)
    gaps = {round(b - a, 3) for a, b in zip(pts, pts[1:])}
    assert len(pts) == 20
    assert len(gaps) > 1, f"fixture is not variable frame rate: {pts}"
    clip = decode_clip(path, num_frames=6, tolerance=1.0)  # setpts stretches the video to 2.8 s, not the 2 s audio
    mids = segment_midpoints(clip.start, clip.start + clip.duration, 6).tolist()
    expected = [max(i for i, p in enumerate(pts) if p <= t + 1e-9) for t in mids]
    assert [frame_index(f) for f in clip.frames] == expected
    torch.testing.assert_close(clip.frame_times, torch.tensor([pts[i] for i in expected], dtype=torch.float64))
    uniform = [int(t / clip.duration * 20) for t in mids]  # what frame-count-based sampling would pick
    assert expected != uniform


def test_separate_audio_file_and_resampling(index_clips, tmp_path: Path) -> None:
    wav = tmp_path / "voice.wav"
    write_wav(wav, second_tones(3, 22050), 22050)
    clip = decode_clip(index_clips[".mp4"], num_frames=3, start=1.0, end=2.0, audio_path=wav, sample_rate=8000)
    assert clip.sample_rate == 8000
    assert clip.audio.numel() == 8000
    assert peak_frequency(clip.audio, 8000) == pytest.approx(tone_of_second(1), abs=15)


def test_webm_decodes(tmp_path: Path) -> None:
    clip = decode_clip(make_index_clip(tmp_path / "c.webm", seconds=1), num_frames=2)
    assert clip.frames.shape[0] == 2
    assert clip.audio.numel() > 0


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "unreadable"),
        ("corrupt", "unreadable"),
        ("zero_bytes", "empty"),
        ("no_audio", "no_audio"),
        ("window_after_end", "window"),
        ("window_before_start", "window"),
        ("empty_window", "window"),
        ("missing_audio_file", "unreadable"),
        ("short_audio_file", "duration_mismatch"),  # 0.5 s of audio for a 3 s clip (was accepted)
        ("truncated_avi", "truncated"),  # half the bytes: decoded as a valid shorter clip before
    ],
)
def test_bad_inputs_raise_clip_error_naming_the_file(index_clips, tmp_path: Path, case: str, reason: str) -> None:
    good = index_clips[".mp4"]
    kwargs: dict = {}
    path: Path = good
    if case == "missing":
        path = tmp_path / "nope.mp4"
    elif case == "corrupt":
        path = tmp_path / "corrupt.mp4"
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    elif case == "zero_bytes":
        path = tmp_path / "zero.mp4"
        path.write_bytes(b"")
    elif case == "no_audio":
        path = make_index_clip(tmp_path / "silent_film.mp4", seconds=1, audio=False)
    elif case == "window_after_end":
        kwargs = {"start": 2.0, "end": 3.5}
    elif case == "window_before_start":
        kwargs = {"start": -1.0, "end": 1.0}
    elif case == "empty_window":
        kwargs = {"start": 1.0, "end": 1.0}
    elif case == "missing_audio_file":
        kwargs = {"audio_path": tmp_path / "nope.wav"}
    elif case == "short_audio_file":
        write_wav(tmp_path / "short.wav", second_tones(3, 16000)[:8000], 16000)
        kwargs = {"audio_path": tmp_path / "short.wav"}
    elif case == "truncated_avi":
        path = tmp_path / "truncated.avi"
        data = index_clips[".avi"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipError) as info:
        decode_clip(path, **kwargs)
    err = info.value
    assert err.reason == reason
    expected_path = kwargs.get("audio_path", path)
    assert err.path == str(expected_path)
    assert str(expected_path) in str(err)


def test_avi_with_mp3_follows_the_files_own_timestamps(tmp_path: Path) -> None:
    """ffmpeg's AVI muxer shifts video timestamps when the audio is MP3 (docs/method.md §7); the decoder reports the
    timestamps the file really has, frame by frame, rather than assuming a constant frame rate."""
    path = make_index_clip(tmp_path / "mp3.avi", audio_codec="libmp3lame")
    pts = _ffprobe_frame_times(path)
    clip = decode_clip(path, num_frames=6)
    idx = [frame_index(f) for f in clip.frames]
    torch.testing.assert_close(clip.frame_times, torch.tensor([pts[i] for i in idx], dtype=torch.float64))
    assert clip.audio.numel() > 2 * 16000

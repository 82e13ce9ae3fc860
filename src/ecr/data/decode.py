"""Synchronised decoding of one clip: `num_frames` frames + mono audio of the same time window.

The paper's model sees 8 frames at the midpoints of 8 equal segments of the clip and the audio of the same
window (docs/method.md §6). `decode_clip` asks torchcodec for the frames *played at* those midpoint times, so the
decoder's real presentation timestamps decide which frame is shown (this is correct for variable frame rate),
and for the audio samples played in the same [start, end) window, down-mixed to mono and resampled by the
decoder. Frame k and the audio around `frame_times[k]` therefore come from the same moment.

Anything that would make a sample silently wrong — a missing or corrupt file, no audio stream, an empty clip,
a window outside the clip, a stream holding fewer frames than its container declares (a truncated file still
decodes, as a shorter clip), audio that does not cover the window (a short separate audio file) — raises
`ClipError(path, reason, detail)` instead of returning zeros or a shorter sample. `ecr data check` applies
this same rule (`decode_clip(..., tolerance=...)`), so what the check passes is what training accepts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ecr.data.types import DecodedClip
from ecr.errors import ClipError

if TYPE_CHECKING:  # torchcodec loads FFmpeg on import: only when a clip is decoded
    from torchcodec.decoders import AudioDecoder, VideoDecoder, VideoStreamMetadata

# How far the first audio sample may start after the requested window start before the pair counts as out of
# sync (AAC priming and container rounding give a few ms; a stream starting later is not the same moment).
AUDIO_START_TOLERANCE_S = 0.1
# How much shorter (s) the audio may be than the window, or the whole audio stream than the video stream.
DURATION_TOLERANCE_S = 0.3
# Frames a stream may hold fewer than its container header declares (some muxers count one extra).
MISSING_FRAMES_TOLERANCE = 1
_EPS = 1e-6


def segment_midpoints(start: float, end: float, num_frames: int) -> torch.Tensor:
    """Midpoints of `num_frames` equal segments of [start, end): float64 [num_frames]."""
    step = (end - start) / num_frames
    return start + (torch.arange(num_frames, dtype=torch.float64) + 0.5) * step


def _open_video(path: Path) -> VideoDecoder:
    from torchcodec.decoders import VideoDecoder

    if not path.is_file():
        raise ClipError(str(path), "unreadable", "file does not exist")
    if path.stat().st_size == 0:
        raise ClipError(str(path), "empty", "file is 0 bytes")
    try:
        return VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1)
    except (RuntimeError, ValueError) as err:
        raise ClipError(str(path), "unreadable", f"cannot open a video stream: {_short(err)}") from err


def _open_audio(path: Path, sample_rate: int) -> AudioDecoder:
    from torchcodec.decoders import AudioDecoder, get_container_metadata

    if not path.is_file():
        raise ClipError(str(path), "unreadable", "audio file does not exist")
    try:
        meta = get_container_metadata(str(path))
    except (RuntimeError, ValueError) as err:
        raise ClipError(str(path), "unreadable", f"cannot read the container: {_short(err)}") from err
    if meta.best_audio_stream_index is None:
        raise ClipError(str(path), "no_audio", "the container has no audio stream")
    try:
        return AudioDecoder(str(path), sample_rate=sample_rate, num_channels=1)
    except (RuntimeError, ValueError) as err:
        raise ClipError(str(path), "unreadable", f"cannot open the audio stream: {_short(err)}") from err


_CPP_LOCATION = re.compile(r"(?:Exception raised from \S+ )?(?:at )?\S*\.(?:cpp|h):\d+(?: \([^)]*\))?[,:]?\s*")


def _short(err: BaseException) -> str:
    """A torchcodec error without its C++ source locations, every clause kept (the reason, e.g. "format does not
    support seeking", may sit before or after the location), at most 300 characters."""
    text = " ".join(str(err).split())
    return (_CPP_LOCATION.sub("", text).strip(" ,:") or text)[:300]


def check_complete(path: Path, meta: VideoStreamMetadata, tolerance: float) -> None:
    """A truncated file still decodes, as a shorter clip: compare the decoded stream with what the container
    declares (frame count, else duration: the stream's, or the container's when the stream has none, as in MKV)."""
    from torchcodec.decoders import get_container_metadata

    declared, found = meta.num_frames_from_header, meta.num_frames_from_content
    if declared and found is not None and found < declared - MISSING_FRAMES_TOLERANCE:
        raise ClipError(
            str(path), "truncated", f"the video stream holds {found} of the {declared} frames its header declares"
        )
    end = meta.end_stream_seconds_from_content
    declared_s = meta.duration_seconds_from_header
    if declared_s is None:
        declared_s = get_container_metadata(str(path)).duration_seconds_from_header
    if end is not None and declared_s is not None and end < declared_s - tolerance:
        raise ClipError(
            str(path), "truncated", f"the video stream ends at {end:.3f} s but the file declares {declared_s:.3f} s"
        )


def check_audio_duration(path: Path, window_s: float, audio_s: float, tolerance: float) -> None:
    """The duration rule shared by training and `ecr data check`: the audio covers the window within `tolerance`."""
    if window_s - audio_s > tolerance:
        raise ClipError(
            str(path),
            "duration_mismatch",
            f"audio covers {audio_s:.3f} s of the {window_s:.3f} s window (tolerance {tolerance} s)",
        )


def decode_clip(
    path: str | Path,
    *,
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = 16000,
    audio_path: str | Path | None = None,
    tolerance: float = DURATION_TOLERANCE_S,
) -> DecodedClip:
    """Decode `num_frames` frames at segment midpoints of [start, end) and the mono audio of that window.

    `start`/`end` are seconds on the container's timeline (default: the whole video stream). Audio comes from
    the same container, or from `audio_path` (a separate file on the same timeline). `tolerance`: seconds the
    audio may fall short of the window (and, for a whole clip, the audio stream of the video stream).
    Raises `ClipError`.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = Path(path)
    vdec = _open_video(path)
    meta = vdec.metadata
    v_begin, v_end = _video_span(path, meta, tolerance)
    w_start = v_begin if start is None else float(start)
    w_end = v_end if end is None else float(end)
    if w_end - w_start <= _EPS:
        raise ClipError(str(path), "window", f"empty window [{w_start:.3f}, {w_end:.3f}) s")
    if w_start < v_begin - 1e-3 or w_end > v_end + 1e-3:
        raise ClipError(
            str(path),
            "window",
            f"window [{w_start:.3f}, {w_end:.3f}) s is outside the clip [{v_begin:.3f}, {v_end:.3f}) s",
        )
    # Midpoints stay strictly inside the stream even when the window touches its end.
    times = segment_midpoints(w_start, min(w_end, v_end), num_frames)
    try:
        batch = vdec.get_frames_played_at(seconds=times.tolist())
    except (RuntimeError, ValueError, IndexError) as err:
        raise ClipError(str(path), "unreadable", f"frame decoding failed: {_short(err)}") from err

    apath = Path(audio_path) if audio_path is not None else path
    adec = _open_audio(apath, sample_rate)
    audio = _window_audio(apath, adec, w_start, w_end, sample_rate, tolerance)
    if start is None and end is None:  # a whole clip: the streams' declared lengths must agree too
        v_s, a_s = meta.duration_seconds_from_header, adec.metadata.duration_seconds_from_header
        if v_s is not None and a_s is not None and abs(v_s - a_s) > tolerance:
            raise ClipError(
                str(apath),
                "duration_mismatch",
                f"video stream {v_s:.3f} s vs audio stream {a_s:.3f} s (tolerance {tolerance} s)",
            )
    return DecodedClip(
        frames=batch.data.contiguous(),  # uint8 [T, 3, H, W]
        frame_times=batch.pts_seconds.to(torch.float64),  # [T]
        audio=audio.contiguous(),
        sample_rate=int(sample_rate),
        duration=w_end - w_start,
        start=w_start,
    )


def _video_span(path: Path, meta: VideoStreamMetadata, tolerance: float) -> tuple[float, float]:
    """[begin, end) seconds of the video stream (torchcodec metadata `meta`); `ClipError` when it is empty or
    incomplete (`check_complete`)."""
    v_begin = float(meta.begin_stream_seconds or 0.0)
    v_end = meta.end_stream_seconds if meta.end_stream_seconds is not None else meta.duration_seconds
    if not meta.num_frames or v_end is None or not math.isfinite(v_end) or v_end - v_begin <= _EPS:
        raise ClipError(str(path), "empty", f"the video stream has no frames/duration ({meta.num_frames} frames)")
    v_end = float(v_end)
    check_complete(path, meta, tolerance)
    return v_begin, v_end


def _window_audio(
    path: Path, adec: AudioDecoder, w_start: float, w_end: float, sample_rate: int, tolerance: float
) -> torch.Tensor:
    """Mono float32 samples [S] of [w_start, w_end) from audio decoder `adec`; `ClipError` when they are missing,
    start late or fall short of the window (`check_audio_duration`)."""
    try:
        samples = adec.get_samples_played_in_range(start_seconds=w_start, stop_seconds=w_end)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ClipError(str(path), "window", f"no audio in [{w_start:.3f}, {w_end:.3f}) s: {_short(err)}") from err
    audio = samples.data.reshape(-1).to(torch.float32)  # [S] (1 channel)
    if audio.numel() == 0:
        raise ClipError(str(path), "empty", f"no audio samples in [{w_start:.3f}, {w_end:.3f}) s")
    if samples.pts_seconds - w_start > AUDIO_START_TOLERANCE_S:
        raise ClipError(
            str(path),
            "window",
            f"audio starts at {samples.pts_seconds:.3f} s, after the window start {w_start:.3f} s",
        )
    check_audio_duration(path, w_end - w_start, audio.numel() / sample_rate, tolerance)
    return audio

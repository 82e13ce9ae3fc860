"""Write real audio/video container files with the system ffmpeg (synthetic datasets and test fixtures).

Frames are piped to ffmpeg as raw RGB and the audio goes through a temporary 16-bit WAV, so the result is an
ordinary container that every decoder reads. Codecs follow the container: .mp4/.mkv get H.264 + AAC, .avi gets
MPEG-4 part 2 + PCM (ffmpeg's AVI muxer shifts the video timestamps when the audio is MP3 — DESIGN §7 — so
exact-sync .avi files carry PCM), .webm gets VP8 + Opus. Any codec can be overridden.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# extension -> (video codec, audio codec, extra video options)
DEFAULT_CODECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    ".mp4": ("libx264", "aac", ("-preset", "ultrafast", "-pix_fmt", "yuv420p")),
    ".mkv": ("libx264", "aac", ("-preset", "ultrafast", "-pix_fmt", "yuv420p")),
    ".avi": ("mpeg4", "pcm_s16le", ("-q:v", "2")),
    ".webm": ("libvpx", "libopus", ("-deadline", "realtime", "-b:v", "1M")),
}


def ffmpeg_binary() -> str:
    """Path of the ffmpeg executable; a clear error when it is missing (it is a system dependency)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg was not found on PATH; install it (e.g. `apt-get install -y ffmpeg`)")
    return exe


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] (shape [S]) as 16-bit PCM WAV."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def encode_clip(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    video_codec: str | None = None,
    audio_codec: str | None = None,
    video_filter: str | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Encode `frames` (uint8 [T, H, W, 3], RGB) at `fps` and optional mono `audio` ([S]) into `path`.

    `video_filter` is passed as `-vf` with pass-through timestamps, e.g. a `setpts=` expression to make a
    variable-frame-rate file. The container is chosen by the file extension (see DEFAULT_CODECS).
    """
    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {frames.shape}")
    ext = path.suffix.lower()
    if ext not in DEFAULT_CODECS and (video_codec is None or (audio is not None and audio_codec is None)):
        raise ValueError(f"{path}: no default codecs for {ext!r}; pass video_codec/audio_codec")
    vcodec, acodec, vopts = DEFAULT_CODECS.get(ext, (video_codec, audio_codec, ()))
    if video_codec is not None and video_codec != vcodec:
        vcodec, vopts = video_codec, ()
    acodec = audio_codec or acodec
    t, h, w, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecr-enc-") as tmp:
        cmd = [
            ffmpeg_binary(),
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            f"{fps}",
            "-i",
            "-",
        ]
        if audio is not None:
            wav = Path(tmp) / "audio.wav"
            write_wav(wav, audio, sample_rate)
            cmd += ["-i", str(wav)]
        cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio is not None else [])
        if video_filter:
            cmd += ["-vf", video_filter, "-fps_mode", "passthrough"]
        cmd += ["-c:v", vcodec, *vopts]
        if audio is not None:
            cmd += ["-c:a", acodec]
        cmd += [*extra_args, str(path)]
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.decode(errors='replace').strip()}")
    return path

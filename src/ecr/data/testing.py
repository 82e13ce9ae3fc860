"""Media whose content encodes its own timing, for tests and benchmarks of the decoding path.

Frame k of an *index clip* is a solid grey of level `10 + 8k` (the decoded frame tells which frame it is,
even after lossy coding, for up to 30 frames) and second s of its audio is a pure tone of `300 + 200 s` Hz (an
FFT of the audio around a moment tells which second it came from). Checking a decoder against these files
checks real timestamps and real A/V alignment, with no mock in the way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ecr.data.encode import encode_clip


def gray_level(k: int) -> int:
    """Grey level of frame k of an index clip."""
    return 10 + 8 * k


def frame_index(frame: torch.Tensor) -> int:
    """Index encoded in a decoded uint8 [3, H, W] frame of an index clip."""
    return int(round((frame.float().mean().item() - 10) / 8))


def tone_of_second(s: int) -> float:
    """Frequency (Hz) of the tone during second s of an index clip."""
    return 300.0 + 200.0 * s


def index_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 [n, h, w, 3] frames, frame k a solid grey of level `gray_level(k)`."""
    if n > 30:
        raise ValueError("an index clip holds at most 30 distinct grey levels")
    frames = np.zeros((n, h, w, 3), np.uint8)
    for k in range(n):
        frames[k] = gray_level(k)
    return frames


def second_tones(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """float32 [seconds * sample_rate] audio, second s a sine of `tone_of_second(s)` Hz."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (0.5 * np.sin(2 * np.pi * (300.0 + 200.0 * np.floor(t)) * t)).astype(np.float32)


def peak_frequency(audio: torch.Tensor, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest component of a mono float [S] signal."""
    spec = torch.fft.rfft(audio.double() * torch.hann_window(audio.numel(), dtype=torch.float64))
    return float(spec.abs().argmax()) * sample_rate / audio.numel()


def make_index_clip(
    path: str | Path,
    *,
    seconds: int = 3,
    fps: int = 10,
    sample_rate: int = 16000,
    size: tuple[int, int] = (48, 64),
    audio: bool = True,
    **encode_kw: object,
) -> Path:
    """Write an index clip (container from the extension, see `ecr.data.encode`)."""
    frames = index_frames(seconds * fps, *size)
    sound = second_tones(seconds, sample_rate) if audio else None
    return encode_clip(path, frames, fps, sound, sample_rate, **encode_kw)  # type: ignore[arg-type]

"""A small synthetic emotion dataset of real video files, for tests and the embedded offline default.

Every clip is a short real container file (H.264/AAC .mp4, some MPEG-4/PCM .avi) of a drawn face, plus a row
of a custom JSONL manifest (DESIGN §6) with an EMER-style explanation. The emotion is learnable from both
modalities, so a tiny model trained on video + audio reaches high accuracy:

Visual cues (per emotion; see `PROFILES`)
  * background colour — one distinct colour per emotion (happy: warm yellow, sad: blue, neutral: grey,
    angry: red, surprise: orange, disgust: green, fear: purple, contempt: teal, anxiety: pink,
    helplessness: brown, disappointment: slate);
  * mouth — curvature (smile > 0, frown < 0) and opening (surprise/fear open an oval mouth);
  * eyebrows — tilt of the inner ends (angry: pulled down into a V, sad/fear/helplessness: raised);
  * eye size (wide for surprise/fear, narrowed for disgust/contempt);
  * head motion — bobbing (happy), shaking (angry, anxiety), drooping (sad, helplessness, disappointment).
Audio cues: a voiced tone whose base pitch is specific to the emotion (from 150 Hz for helplessness to
420 Hz for fear), with an emotion-specific contour (rising, falling, flat, glide up, tremolo) and timbre
(number of harmonics). Per-clip jitter (face position/size, skin tone, background brightness, pitch ±4 %,
noise) keeps the task from being a lookup of one exact file.

Explanations: one or two visual sentences, one audio sentence, zero to two neutral filler sentences (in
random order) and a concluding sentence naming the emotion, each drawn from several templates per emotion.
With `inconsistent_fraction > 0` that fraction of rows gets explanations whose emotional sentences
(visual, audio and conclusion) describe a different emotion than the label; the manifest marks them with
`explanation_consistent: false` and `explanation_emotion: <the emotion described>` — the miniature of the
label/explanation mismatch the ERV reward is meant to fix. Everything is deterministic given `seed`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecr.data.encode import encode_clip
from ecr.labels import LabelSet, get_label_set

MANIFEST_NAME = "manifest.jsonl"
TEXT_MANIFEST_NAME = "text.jsonl"


@dataclass(frozen=True)
class CueProfile:
    """Audio-visual cues and explanation phrases of one emotion concept."""

    words: frozenset[str]  # label names this profile serves (synonyms across label sets)
    adjective: str  # used in conclusions ("the person seems {adjective}")
    background: tuple[int, int, int]
    mouth_curve: float  # >0 smile, <0 frown
    mouth_open: float  # 0 closed .. 1 wide open oval
    brow_tilt: float  # >0 inner ends raised, <0 inner ends pulled down (V)
    eye_size: float  # relative eye radius
    motion: str  # "bob" | "shake" | "droop" | "still"
    pitch: float  # base pitch (Hz)
    contour: str  # "rise" | "fall" | "flat" | "glide" | "tremolo" | "bounce"
    harmonics: int
    visual: tuple[str, ...]
    audio: tuple[str, ...]
    conclusion: tuple[str, ...]


def _p(words: str, adjective: str, **kw: object) -> CueProfile:
    return CueProfile(words=frozenset(words.split()), adjective=adjective, **kw)  # type: ignore[arg-type]


PROFILES: tuple[CueProfile, ...] = (
    _p(
        "happy happiness joy",
        "happy",
        background=(235, 200, 60),
        mouth_curve=1.0,
        mouth_open=0.0,
        brow_tilt=0.2,
        eye_size=1.0,
        motion="bob",
        pitch=330.0,
        contour="bounce",
        harmonics=2,
        visual=(
            "The character's mouth curves upward into a broad smile.",
            "The corners of the lips are lifted and the cheeks look raised in a grin.",
            "The face is framed by a warm, bright yellow background that feels cheerful.",
            "The person's eyes look relaxed while the smile stays wide.",
        ),
        audio=(
            "The voice sounds bright and cheerful, bouncing up and down in pitch.",
            "The speech has a lively, high and joyful melody.",
            "Their tone of voice is upbeat and full of delight.",
        ),
        conclusion=(
            "Overall the person seems happy.",
            "Taken together, these cues express joy and happiness.",
            "The character appears to be in a happy, joyful mood.",
        ),
    ),
    _p(
        "sad sadness",
        "sad",
        background=(60, 90, 180),
        mouth_curve=-0.9,
        mouth_open=0.0,
        brow_tilt=0.8,
        eye_size=0.8,
        motion="droop",
        pitch=165.0,
        contour="fall",
        harmonics=1,
        visual=(
            "The corners of the mouth turn down in a clear frown.",
            "The inner ends of the eyebrows are raised in a sorrowful way.",
            "The head sinks slowly against a cold blue background.",
            "The eyes look heavy and downcast.",
        ),
        audio=(
            "The voice is low and falls slowly, sounding sad.",
            "The speech is soft and sorrowful, its pitch sinking at the end.",
            "Their tone sounds gloomy and tearful.",
        ),
        conclusion=(
            "Overall the person seems sad.",
            "These cues point to sadness and sorrow.",
            "The character appears to be unhappy and sad.",
        ),
    ),
    _p(
        "neutral calm",
        "neutral",
        background=(128, 128, 128),
        mouth_curve=0.0,
        mouth_open=0.0,
        brow_tilt=0.0,
        eye_size=1.0,
        motion="still",
        pitch=220.0,
        contour="flat",
        harmonics=1,
        visual=(
            "The mouth is a straight, relaxed line.",
            "The eyebrows rest in their normal position.",
            "The face stays still against a plain grey background.",
            "The expression shows no particular movement of the mouth or brows.",
        ),
        audio=(
            "The voice is level and even, with a steady pitch.",
            "The speech sounds calm and matter-of-fact.",
            "Their tone is flat and composed.",
        ),
        conclusion=(
            "Overall the person seems neutral.",
            "The person appears calm, showing a neutral state.",
            "No strong emotion is expressed; the mood is neutral.",
        ),
    ),
    _p(
        "angry anger",
        "angry",
        background=(200, 50, 40),
        mouth_curve=-0.5,
        mouth_open=0.2,
        brow_tilt=-1.0,
        eye_size=0.8,
        motion="shake",
        pitch=260.0,
        contour="flat",
        harmonics=5,
        visual=(
            "The eyebrows are pulled down sharply into a V, a furious glare.",
            "The mouth is tense and the lips are pressed in anger.",
            "The head shakes in front of a harsh red background.",
            "The face looks hostile, with narrowed eyes and lowered brows.",
        ),
        audio=(
            "The voice is loud, harsh and rasping, sounding angry.",
            "The speech has a rough, aggressive edge.",
            "Their tone is sharp and furious.",
        ),
        conclusion=(
            "Overall the person seems angry.",
            "These cues express anger.",
            "The character appears to be furious and angry.",
        ),
    ),
    _p(
        "surprise surprised",
        "surprised",
        background=(240, 140, 40),
        mouth_curve=0.0,
        mouth_open=1.0,
        brow_tilt=0.6,
        eye_size=1.5,
        motion="still",
        pitch=300.0,
        contour="glide",
        harmonics=2,
        visual=(
            "The mouth drops open into a round O shape.",
            "The eyes are wide open and the eyebrows shoot up in astonishment.",
            "The wide-eyed face stands out against an orange background.",
            "The jaw hangs open in a startled expression.",
        ),
        audio=(
            "The voice jumps upward in a sudden rising glide, sounding astonished.",
            "The pitch climbs quickly as if exclaiming in surprise.",
            "Their tone sounds startled and amazed.",
        ),
        conclusion=(
            "Overall the person seems surprised.",
            "These cues express surprise.",
            "The character appears to be astonished and surprised.",
        ),
    ),
    _p(
        "disgust disgusted",
        "disgusted",
        background=(80, 150, 60),
        mouth_curve=-0.6,
        mouth_open=0.1,
        brow_tilt=-0.5,
        eye_size=0.6,
        motion="still",
        pitch=185.0,
        contour="fall",
        harmonics=4,
        visual=(
            "The upper lip curls and the mouth twists with revulsion.",
            "The eyes narrow and the brows lower as if smelling something foul.",
            "The grimacing face sits on a sickly green background.",
            "The face wrinkles in a look of distaste.",
        ),
        audio=(
            "The voice sounds nasal and buzzing, dropping in disgust.",
            "The speech has a grating, repulsed quality.",
            "Their tone expresses distaste and revulsion.",
        ),
        conclusion=(
            "Overall the person seems disgusted.",
            "These cues express disgust.",
            "The character appears to be repulsed and disgusted.",
        ),
    ),
    _p(
        "fear fearful afraid",
        "afraid",
        background=(120, 60, 150),
        mouth_curve=-0.3,
        mouth_open=0.6,
        brow_tilt=1.0,
        eye_size=1.4,
        motion="shake",
        pitch=420.0,
        contour="tremolo",
        harmonics=1,
        visual=(
            "The eyes are wide with terror and the brows are drawn up.",
            "The mouth is stretched open in a frightened grimace.",
            "The trembling face appears against a dark purple background.",
            "The face looks tense and scared.",
        ),
        audio=(
            "The voice is high and trembling, sounding frightened.",
            "The speech quivers with a shaky, fearful pitch.",
            "Their tone sounds scared and panicked.",
        ),
        conclusion=(
            "Overall the person seems afraid.",
            "These cues express fear.",
            "The character appears to be frightened and fearful.",
        ),
    ),
    _p(
        "contempt contemptuous",
        "contemptuous",
        background=(40, 150, 150),
        mouth_curve=0.3,
        mouth_open=0.0,
        brow_tilt=-0.3,
        eye_size=0.7,
        motion="still",
        pitch=200.0,
        contour="fall",
        harmonics=3,
        visual=(
            "One corner of the mouth lifts in a scornful smirk.",
            "The eyes are half closed in a disdainful look.",
            "The smirking face is set against a teal background.",
        ),
        audio=(
            "The voice is cool and dismissive, dropping at the end.",
            "The speech sounds scornful and condescending.",
        ),
        conclusion=("Overall the person seems contemptuous.", "These cues express contempt and scorn."),
    ),
    _p(
        "anxiety anxious nervous",
        "anxious",
        background=(220, 120, 170),
        mouth_curve=-0.2,
        mouth_open=0.1,
        brow_tilt=0.6,
        eye_size=1.2,
        motion="shake",
        pitch=360.0,
        contour="tremolo",
        harmonics=2,
        visual=(
            "The head jitters restlessly and the brows are knitted with worry.",
            "The lips are tight and the eyes dart nervously.",
            "The uneasy face is shown on a pink background.",
        ),
        audio=("The voice wavers quickly, sounding nervous.", "The speech is hurried and tense with worry."),
        conclusion=("Overall the person seems anxious.", "These cues express anxiety and nervousness."),
    ),
    _p(
        "helplessness helpless",
        "helpless",
        background=(130, 90, 60),
        mouth_curve=-0.6,
        mouth_open=0.1,
        brow_tilt=0.9,
        eye_size=0.9,
        motion="droop",
        pitch=150.0,
        contour="fall",
        harmonics=1,
        visual=(
            "The head droops and the brows rise in a powerless expression.",
            "The mouth sags as if giving up.",
            "The slumped face appears against a brown background.",
        ),
        audio=(
            "The voice fades and sinks, sounding helpless.",
            "The speech trails off weakly in resignation.",
        ),
        conclusion=("Overall the person seems helpless.", "These cues express helplessness."),
    ),
    _p(
        "disappointment disappointed",
        "disappointed",
        background=(70, 80, 100),
        mouth_curve=-0.4,
        mouth_open=0.0,
        brow_tilt=0.3,
        eye_size=0.8,
        motion="droop",
        pitch=190.0,
        contour="fall",
        harmonics=2,
        visual=(
            "The mouth flattens into a let-down pout.",
            "The gaze drops and the face sags with disappointment.",
            "The deflated face sits on a dull slate background.",
        ),
        audio=(
            "The voice sighs and falls, sounding disappointed.",
            "The speech is flat and deflated, as if let down.",
        ),
        conclusion=("Overall the person seems disappointed.", "These cues express disappointment."),
    ),
)

FILLER_SENTENCES: tuple[str, ...] = (
    "The clip shows a single person facing the camera.",
    "The camera does not move during the short video.",
    "The person stays near the centre of the frame.",
    "The lighting is the same from start to end.",
    "The face is drawn with simple shapes.",
    "There is one speaker in the scene.",
)


def profile_for(label: str, index: int, num_labels: int) -> CueProfile:
    """Cue profile of a label: the built-in one for known emotions, a generated one for custom labels."""
    for prof in PROFILES:
        if label in prof.words:
            return prof
    hue = index / max(1, num_labels)
    rgb = tuple(int(127 + 110 * np.cos(2 * np.pi * (hue + s / 3))) for s in range(3))
    return CueProfile(
        words=frozenset({label}),
        adjective=label,
        background=rgb,  # type: ignore[arg-type]
        mouth_curve=float(np.cos(2 * np.pi * hue)),
        mouth_open=0.5 * (index % 2),
        brow_tilt=float(np.sin(2 * np.pi * hue)),
        eye_size=1.0,
        motion=("bob", "shake", "droop", "still")[index % 4],
        pitch=150.0 * 2 ** (1.5 * hue),
        contour=("rise", "fall", "flat", "glide", "tremolo")[index % 5],
        harmonics=1 + index % 4,
        visual=(f"The facial expression suggests {label}.", f"The face shows clear signs of {label}."),
        audio=(f"The voice carries a tone of {label}.", f"The way the person speaks conveys {label}."),
        conclusion=(f"Overall the person seems to feel {label}.", f"These cues express {label}."),
    )


# ----------------------------------------------------------------------------------------------- drawing
def draw_frames(prof: CueProfile, rng: np.random.Generator, *, num: int, size: int) -> np.ndarray:
    """Frames of a drawn face showing `prof`'s cues: uint8 [num, size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size * rng.uniform(0.28, 0.34)
    cx0, cy0 = size / 2 + rng.uniform(-0.06, 0.06) * size, size / 2 + rng.uniform(-0.05, 0.05) * size
    bg = np.clip(np.array(prof.background) + rng.uniform(-15, 15), 0, 255)
    skin = np.clip(np.array([228, 188, 150]) + rng.uniform(-20, 20, 3), 0, 255)
    out = np.empty((num, size, size, 3), np.float32)
    for k in range(num):
        u = k / max(1, num - 1)
        dx = dy = 0.0
        if prof.motion == "bob":
            dy = 0.05 * size * np.sin(2 * np.pi * 2 * u)
        elif prof.motion == "shake":
            dx = 0.05 * size * np.sin(2 * np.pi * 4 * u)
        elif prof.motion == "droop":
            dy = 0.08 * size * u
        cx, cy = cx0 + dx, cy0 + dy
        img = np.broadcast_to(bg, (size, size, 3)).copy()
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = skin
        dark = np.array([30, 25, 25])
        for side in (-1, 1):
            ex, ey = cx + side * 0.38 * r, cy - 0.2 * r
            er = max(1.0, 0.11 * r * prof.eye_size)
            img[(xx - ex) ** 2 + (yy - ey) ** 2 <= er * er] = dark
            # brow: a thick segment above the eye; s runs from the outer (-1) to the inner (+1) end
            s = (xx - ex) * (-side) / (0.22 * r)
            brow_y = ey - 0.32 * r - prof.brow_tilt * 0.12 * r * s
            img[(np.abs(s) <= 1) & (np.abs(yy - brow_y) <= max(1.0, 0.05 * r))] = dark
        my, mw = cy + 0.45 * r, 0.42 * r
        t = (xx - cx) / mw
        mouth_y = my + prof.mouth_curve * 0.22 * r * (1 - t**2) - prof.mouth_curve * 0.11 * r
        img[(np.abs(t) <= 1) & (np.abs(yy - mouth_y) <= max(1.0, 0.06 * r))] = (150, 40, 40)
        if prof.mouth_open > 0:
            oh, ow = 0.2 * r * prof.mouth_open + 0.5, 0.22 * r * (0.5 + 0.5 * prof.mouth_open)
            img[((xx - cx) / ow) ** 2 + ((yy - my) / oh) ** 2 <= 1] = (70, 20, 20)
        out[k] = img
    out += rng.normal(0, 4.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- sound
def synth_voice(prof: CueProfile, rng: np.random.Generator, *, duration: float, sample_rate: int) -> np.ndarray:
    """A voiced tone with the profile's pitch, contour and timbre: float32 [duration * sample_rate]."""
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    u = t / duration
    f0 = prof.pitch * rng.uniform(0.96, 1.04)
    contour = {
        "rise": 1 + 0.25 * u,
        "fall": 1.15 - 0.3 * u,
        "flat": np.ones_like(u),
        "glide": 1 + 0.6 * np.clip((u - 0.2) * 3, 0, 1),
        "tremolo": 1 + 0.04 * np.sin(2 * np.pi * 9 * t),
        "bounce": 1 + 0.15 * np.abs(np.sin(2 * np.pi * 2 * u)),
    }[prof.contour]
    phase = 2 * np.pi * np.cumsum(f0 * contour) / sample_rate
    wave = sum(np.sin(h * phase) / h for h in range(1, prof.harmonics + 1))
    env = np.minimum(1.0, np.minimum(t, duration - t) / 0.05)  # 50 ms fade in/out
    if prof.contour == "tremolo":
        env = env * (0.75 + 0.25 * np.sin(2 * np.pi * 7 * t))
    sig = wave * env
    sig = 0.5 * sig / max(1e-6, float(np.abs(sig).max()))
    sig = sig + rng.normal(0, 0.01, n)
    return sig.astype(np.float32)


# ------------------------------------------------------------------------------------------- explanation
def compose_explanation(prof: CueProfile, rng: np.random.Generator) -> str:
    """EMER-style explanation: 1-2 visual + 1 audio + 0-2 filler sentences (shuffled), then a conclusion."""
    visual = list(rng.choice(prof.visual, size=min(len(prof.visual), int(rng.integers(1, 3))), replace=False))
    body = visual + [str(rng.choice(prof.audio))]
    body += list(rng.choice(FILLER_SENTENCES, size=int(rng.integers(0, 3)), replace=False))
    order = rng.permutation(len(body))
    return " ".join([body[i] for i in order] + [str(rng.choice(prof.conclusion))])


def _assign_splits(labels: list[int], fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Stratified split: per label, the first share goes to train, the next to val, the rest to test."""
    names = ("train", "val", "test")
    splits = [""] * len(labels)
    for lbl in sorted(set(labels)):
        idx = [i for i, x in enumerate(labels) if x == lbl]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        n = len(idx)
        n_val = int(round(n * fractions[1])) if n >= 3 else 0
        n_test = int(round(n * fractions[2])) if n >= 3 else 0
        n_train = max(1, n - n_val - n_test)
        n_val = min(n_val, n - n_train)
        for j, i in enumerate(idx):
            splits[i] = names[0] if j < n_train else names[1] if j < n_train + n_val else names[2]
    return splits


def synthesize(
    out_dir: str | Path,
    num_clips: int = 32,
    labels: str | Sequence[str] = "dfew",
    seed: int = 0,
    *,
    inconsistent_fraction: float = 0.0,
    size: int = 64,
    fps: float = 8.0,
    duration: float = 2.0,
    sample_rate: int = 16000,
    avi_fraction: float = 0.25,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    num_threads: int = 2,
) -> Path:
    """Write `num_clips` synthetic clips + `manifest.jsonl` under `out_dir`; return the manifest path.

    Labels cycle through the label set (balanced), clips are shuffled; every `1/avi_fraction`-th clip is an
    .avi (MPEG-4 + PCM), the others .mp4 (H.264 + AAC). Deterministic given `seed`.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if not 0.0 <= inconsistent_fraction <= 1.0:
        raise ValueError(f"inconsistent_fraction must be in [0, 1], got {inconsistent_fraction}")
    if size % 2:
        raise ValueError(f"size must be even (H.264 with yuv420p), got {size}")
    label_set: LabelSet = get_label_set(labels)
    names = list(label_set.labels)
    profiles = [profile_for(n, i, len(names)) for i, n in enumerate(names)]
    rng = np.random.default_rng(seed)
    clip_labels = [i % len(names) for i in range(num_clips)]
    clip_labels = [clip_labels[j] for j in rng.permutation(num_clips)]
    splits = _assign_splits(clip_labels, split_fractions, rng)
    n_bad = int(round(inconsistent_fraction * num_clips))
    bad = set(rng.permutation(num_clips)[:n_bad].tolist()) if len(names) > 1 else set()
    every_avi = int(round(1 / avi_fraction)) if avi_fraction > 0 else 0
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)

    rows, jobs = [], []
    for i, li in enumerate(clip_labels):
        crng = np.random.default_rng([seed, i])
        ext = ".avi" if every_avi and i % every_avi == every_avi - 1 else ".mp4"
        rel = f"clips/clip_{i:04d}{ext}"
        expl_label = li
        if i in bad:
            expl_label = int((li + 1 + crng.integers(0, len(names) - 1)) % len(names))
        frames = draw_frames(profiles[li], crng, num=max(1, int(round(duration * fps))), size=size)
        audio = synth_voice(profiles[li], crng, duration=duration, sample_rate=sample_rate)
        jobs.append((out_dir / rel, frames, audio))
        rows.append(
            {
                "id": f"clip_{i:04d}",
                "video": rel,
                "label": names[li],
                "explanation": compose_explanation(profiles[expl_label], crng),
                "split": splits[i],
                "explanation_consistent": expl_label == li,
                "explanation_emotion": names[expl_label],
            }
        )
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        list(pool.map(lambda job: encode_clip(job[0], job[1], fps, job[2], sample_rate), jobs))
    manifest = out_dir / MANIFEST_NAME
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(manifest)
    (out_dir / "labels.json").write_text(json.dumps({"name": label_set.name, "labels": names}, indent=1) + "\n")
    return manifest


def write_text_manifest(
    manifest: str | Path, out: str | Path | None = None, *, include_inconsistent: bool = False
) -> Path:
    """Text rows of a synthetic dataset (for `TextDataModule`): text = the explanation minus its conclusion.

    The cue sentences (visual, audio, filler) describe the clip; the concluding sentence that names the
    emotion is left out of `text`, so a text model has to infer the label. Rows whose explanation describes
    another emotion than the label are dropped unless `include_inconsistent`. Default output:
    `text.jsonl` next to `manifest`.
    """
    manifest = Path(manifest)
    names = json.loads((manifest.parent / "labels.json").read_text())["labels"]
    rows = []
    for lineno, line in enumerate(manifest.read_text().splitlines(), 1):
        row = json.loads(line)
        if not row["explanation_consistent"] and not include_inconsistent:
            continue
        emotion = row["explanation_emotion"]
        prof = profile_for(emotion, names.index(emotion), len(names))
        ending = next((c for c in prof.conclusion if row["explanation"].endswith(" " + c)), None)
        if ending is None:
            raise ValueError(f"{manifest}:{lineno}: explanation does not end with a {emotion!r} conclusion")
        text = row["explanation"][: -len(ending) - 1]
        rows.append({"id": row["id"], "text": text, "label": row["label"], "explanation": row["explanation"],
                     "split": row["split"], "explanation_consistent": row["explanation_consistent"]})  # fmt: skip
    path = Path(out) if out is not None else manifest.parent / TEXT_MANIFEST_NAME
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def synth_command(
    out: Path,
    num_clips: int = 32,
    labels: str | list[str] = "dfew",
    seed: int = 0,
    inconsistent_fraction: float = 0.0,
    size: int = 64,
    fps: float = 8.0,
    duration: float = 2.0,
    sample_rate: int = 16000,
    avi_fraction: float = 0.25,
    text: bool = False,
) -> int:
    """Write a synthetic emotion dataset (real .mp4/.avi clips + manifest.jsonl with splits and explanations).

    Args:
        out: output folder (created).
        num_clips: number of clips; labels are balanced.
        labels: label set name (dfew, mafw) or a list of labels.
        seed: random seed (the dataset is a pure function of its arguments).
        inconsistent_fraction: share of rows whose explanation describes a different emotion than the label.
        size: frame width/height in pixels (even).
        fps: frame rate of the clips.
        duration: clip length in seconds.
        sample_rate: audio sample rate (Hz).
        avi_fraction: share of clips written as .avi (MPEG-4 + PCM) instead of .mp4 (H.264 + AAC).
        text: also write text.jsonl (text rows for `ecr.data.TextDataModule`: cue sentences without the conclusion).
    """
    manifest = synthesize(
        out,
        num_clips,
        labels,
        seed,
        inconsistent_fraction=inconsistent_fraction,
        size=size,
        fps=fps,
        duration=duration,
        sample_rate=sample_rate,
        avi_fraction=avi_fraction,
    )
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    n_incons = sum(not r["explanation_consistent"] for r in rows)
    print(
        f"wrote {len(rows)} clips to {Path(out)} (manifest {manifest.name}); splits {counts}; "
        f"{n_incons} inconsistent explanations"
    )
    if text:
        text_path = write_text_manifest(manifest)
        print(f"wrote {sum(1 for _ in text_path.open())} text rows (consistent explanations) to {text_path}")
    return 0

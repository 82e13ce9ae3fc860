"""Label vocabularies of the method: dataset label sets, synonym normalisation, verifier-space mappings.

Every stage (SFT targets, the accuracy reward, evaluation, the ERV reward) goes through ONE normaliser, so a
model answering "happiness" on DFEW (whose label is "happy") is scored the same way everywhere. The active
label set always comes from configuration, never from a substring of a file path (a bug of the research code).

Facts (docs/method.md §2-§3): DFEW and MAFW label orders are the datasets' id orders (ids start at 1 in the
release files, at 0 here); the 28 GoEmotions classes are in the order of the released verifier (neutral=27).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ecr.errors import LabelError

DFEW_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
MAFW_LABELS: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)  # fmt: skip
GOEMOTIONS_LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip
NEUTRAL = "neutral"

# Word forms that name the same emotion. Each group is one concept; normalisation maps any member to the
# member that belongs to the active label set. Matching is on the whole (cleaned) answer, never on a
# substring, so "unhappy" does not become "happy".
SYNONYM_GROUPS: tuple[frozenset[str], ...] = tuple(
    frozenset(g)
    for g in (
        {"happy", "happiness", "joyful", "glad"},
        {"sad", "sadness", "unhappy", "sorrow"},
        {"angry", "anger", "mad", "furious"},
        {"surprise", "surprised", "astonished", "astonishment"},
        {"fear", "fearful", "afraid", "scared", "frightened"},
        {"disgust", "disgusted"},
        {"neutral", "calm", "none"},
        {"contempt", "contemptuous", "scorn"},
        {"anxiety", "anxious", "nervous", "worried", "worry"},
        {"helplessness", "helpless"},
        {"disappointment", "disappointed"},
    )
)

# Task concept -> GoEmotions class used by the released verifier (docs/method.md §3). Keyed by any member of a
# synonym group, so DFEW's "happy" and MAFW's "happiness" both reach "joy".
GOEMOTIONS_MAPPING: dict[str, str] = {
    "happiness": "joy",
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "sadness": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
    "anxiety": "nervousness",
    "helplessness": "grief",
    "disappointment": "disappointment",
    "contempt": "disapproval",
}

_CLEAN = re.compile(r"^[\s\"'`.,;:!?()\[\]{}*_-]+|[\s\"'`.,;:!?()\[\]{}*_-]+$")


def clean_text(text: str) -> str:
    """Lower-case, collapse whitespace and strip surrounding punctuation/quotes/markdown emphasis."""
    return _CLEAN.sub("", " ".join(text.lower().split()))


def _group_of(word: str) -> frozenset[str] | None:
    for group in SYNONYM_GROUPS:
        if word in group:
            return group
    return None


@dataclass(frozen=True)
class LabelSet:
    """An ordered list of class names plus the synonyms that normalise free text onto them.

    `extra_synonyms` maps a lower-case word to one of `labels` (custom datasets add their own forms).
    """

    name: str
    labels: tuple[str, ...]
    extra_synonyms: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = tuple(clean_text(lbl) for lbl in self.labels)
        if not labels:
            raise LabelError(f"label set {self.name!r} is empty")
        if len(set(labels)) != len(labels):
            raise LabelError(f"label set {self.name!r} has duplicate labels: {list(self.labels)}")
        object.__setattr__(self, "labels", labels)
        for word, target in self.extra_synonyms.items():
            if clean_text(target) not in labels:
                raise LabelError(
                    f"label set {self.name!r}: synonym {word!r} points to {target!r}, "
                    f"which is not one of {list(labels)}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and self.normalize(label) is not None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def normalize(self, text: str | None) -> str | None:
        """Canonical label for a free-text answer, or None when it names no label of this set."""
        if text is None:
            return None
        word = clean_text(text)
        if word in self.labels:
            return word
        extra = {clean_text(k): clean_text(v) for k, v in self.extra_synonyms.items()}
        if word in extra:
            return extra[word]
        group = _group_of(word)
        if group is None:
            return None
        hits = [lbl for lbl in self.labels if lbl in group]
        return hits[0] if len(hits) == 1 else None

    def canonical(self, text: str, *, where: str = "label") -> str:
        """Like `normalize` but raises a `LabelError` naming `where` when the text is not a label."""
        label = self.normalize(text)
        if label is None:
            raise LabelError(f"{where}: {text!r} is not a label of {self.name!r} {list(self.labels)}")
        return label

    def index(self, text: str, *, where: str = "label") -> int:
        """0-based class id of a label (after normalisation)."""
        return self.labels.index(self.canonical(text, where=where))


DFEW = LabelSet("dfew", DFEW_LABELS)
MAFW = LabelSet("mafw", MAFW_LABELS)
GOEMOTIONS = LabelSet("goemotions", GOEMOTIONS_LABELS)
_BUILTIN: dict[str, LabelSet] = {"dfew": DFEW, "mafw": MAFW, "goemotions": GOEMOTIONS}


def get_label_set(spec: str | Sequence[str] | LabelSet, *, synonyms: Mapping[str, str] | None = None) -> LabelSet:
    """Resolve a label set from config: a built-in name ("dfew", "mafw", "goemotions"), a list, or a LabelSet."""
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _BUILTIN:
            raise LabelError(f"unknown label set {spec!r}; built-in sets are {sorted(_BUILTIN)} (or give a list)")
        base = _BUILTIN[key]
        return LabelSet(base.name, base.labels, dict(synonyms or {})) if synonyms else base
    return LabelSet("custom", tuple(spec), dict(synonyms or {}))


def verifier_label_space(task: LabelSet, *, add_neutral: bool = True) -> tuple[str, ...]:
    """Label space of a verifier trained on the task's own labels: the task labels, plus neutral if absent."""
    labels = list(task.labels)
    if add_neutral and NEUTRAL not in labels:
        labels.append(NEUTRAL)
    return tuple(labels)


def resolve_label_space(spec: str | Sequence[str], *, add_neutral: bool = True) -> tuple[str, ...]:
    """Verifier classes from config: "goemotions" (28 classes), a task set name ("dfew", "mafw") or a list.

    Task sets get neutral appended when absent, because the reward needs a neutral class to filter sentences.
    """
    if isinstance(spec, str) and spec.lower() == "goemotions":
        return GOEMOTIONS_LABELS
    return verifier_label_space(get_label_set(spec), add_neutral=add_neutral)


def default_verifier_mapping(verifier_labels: Sequence[str]) -> dict[str, str] | None:
    """The mapping a verifier without a saved one gets: `GOEMOTIONS_MAPPING` for the 28 GoEmotions classes (the
    released verifier), else None (identity: a verifier trained on the task's own labels)."""
    return GOEMOTIONS_MAPPING if tuple(clean_text(v) for v in verifier_labels) == GOEMOTIONS_LABELS else None


def resolve_verifier_mapping(
    task: LabelSet,
    verifier_labels: Sequence[str],
    mapping: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Map every task label to a class index of the verifier; raise before training if one cannot be mapped.

    `mapping` is keyed by any word of a task label's synonym group (e.g. "happiness" or "happy") and names a
    verifier class. With `mapping=None` the identity is used (task label -> same-named verifier class, synonyms
    allowed), which is right for a verifier trained on the task's own labels; pass `GOEMOTIONS_MAPPING` for the
    28-class GoEmotions verifier. A label missing from `mapping` falls back to a same-named verifier class.
    """
    vlabels = [clean_text(v) for v in verifier_labels]
    vset = LabelSet("verifier", tuple(vlabels))
    keyed = {clean_text(k): clean_text(v) for k, v in (mapping or {}).items()}
    out: dict[str, int] = {}
    for label in task.labels:
        group = _group_of(label) or frozenset({label})
        target: str | None = None
        for word in sorted(group | {label}):
            if word in keyed:
                target = keyed[word]
                break
        if target is None:  # not in the mapping: a same-named verifier class (synonyms allowed)
            target = vset.normalize(label)
        if target is None or target not in vlabels:
            raise LabelError(
                f"task label {label!r} of {task.name!r} does not map into the verifier's label space "
                f"{vlabels}: add it to the verifier mapping (mapped keys: {sorted(keyed)})"
            )
        out[label] = vlabels.index(target)
    return out


def label_distribution(labels: Iterable[str]) -> dict[str, int]:
    """Count of each label, most frequent first (for the summaries of `ecr label` and `ecr data check`)."""
    counts: dict[str, int] = {}
    for lbl in labels:
        counts[lbl] = counts.get(lbl, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

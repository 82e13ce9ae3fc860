"""Classifier teacher: a local Hugging Face classification checkpoint (e.g. a GoEmotions model) as labeller.

Distils a large local classifier into a smaller student without any API. The checkpoint loads by path only.
Its classes are mapped into the label space (`label_map`, else `map_into_space`: the space's synonyms, then the
task<->GoEmotions table); a label-space class receives the highest probability of the teacher classes mapped to
it, and teacher classes with no counterpart are ignored. Multi-label checkpoints use sigmoid, single-label ones
softmax (`config.problem_type`). Answers carry the mapped probabilities, which training uses as soft targets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ecr.errors import ConfigError
from ecr.labels import LabelSet, resolve_label_space
from ecr.models.verifier import HFVerifier
from ecr.teachers.base import TeacherLabel, TeacherResult, map_into_space


class ClassifierTeacher:
    """Pseudo-labels with a local HF sequence classifier (see module docstring)."""

    name = "classifier"

    def __init__(
        self,
        path: str | os.PathLike[str],
        labels: str | Sequence[str] = "dfew",
        *,
        label_map: Mapping[str, str | None] | None = None,
        threshold: float = 0.5,
        max_labels: int = 2,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = str(path)
        if not os.path.isfile(os.path.join(self.path, "config.json")):
            raise ConfigError(f"classifier teacher: {self.path!r} is not a local HF model folder (no config.json)")
        self.label_names = resolve_label_space(labels)
        self.space = LabelSet("space", self.label_names)
        self.threshold = threshold
        self.max_labels = max_labels
        model = AutoModelForSequenceClassification.from_pretrained(self.path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        teacher_names = [id2label[i] for i in range(len(id2label))]
        activation = "softmax" if model.config.problem_type == "single_label_classification" else "sigmoid"
        self.model = HFVerifier(model, tokenizer, teacher_names, batch_size=batch_size, activation=activation)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        overrides = {k.lower(): v for k, v in (label_map or {}).items()}
        targets: list[int] = []  # teacher class -> space index (or -1)
        for name in self.model.label_names:
            target = overrides[name] if name in overrides else map_into_space(name, self.space)
            if target is not None and target not in self.label_names:
                raise ConfigError(f"classifier teacher label_map: {name!r}->{target!r} not in {self.label_names}")
            targets.append(self.label_names.index(target) if target is not None else -1)
        if all(t < 0 for t in targets):
            raise ConfigError(
                f"classifier teacher {self.path!r}: none of its classes {self.model.label_names} maps into "
                f"{list(self.label_names)}; give a label_map"
            )
        self._targets = torch.tensor(targets)

    def settings(self) -> dict[str, Any]:
        return {"teacher": self.name, "path": self.path, "labels": list(self.label_names), "threshold": self.threshold}

    def space_probs(self, texts: Sequence[str]) -> torch.Tensor:
        """float [N, C_space]: per space class, the max probability of the teacher classes mapped to it."""
        p = self.model.probs(list(texts))  # [N, C_teacher]
        out = torch.zeros(p.shape[0], len(self.label_names))
        keep = self._targets >= 0
        index = self._targets[keep].unsqueeze(0).expand(p.shape[0], -1)  # [N, K]
        return out.scatter_reduce(1, index, p[:, keep], reduce="amax", include_self=True)

    def label(self, texts: Sequence[str]) -> list[TeacherResult]:
        probs = self.space_probs(texts)
        results: list[TeacherResult] = []
        for row in probs:
            order = row.argsort(descending=True).tolist()
            chosen = [i for i in order if row[i] >= self.threshold][: self.max_labels] or order[:1]
            results.append(
                TeacherLabel(
                    tuple(self.label_names[i] for i in chosen),
                    {name: round(float(p), 6) for name, p in zip(self.label_names, row.tolist(), strict=True)},
                )
            )
        return results

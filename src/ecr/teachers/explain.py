"""`ecr explain`: bootstrap SFT explanations for a dataset that has labels only (DFEW, MAFW, most real sets).

Step 1 is an ordinary `ecr predict` on the TRAINING clips with an instruction that holds `{label}` (each clip's
label is put into its prompt, so the policy explains an emotion it is told rather than guesses it; an
instruction-tuned Omni, or an API teacher's answers in the same JSONL shape). Step 2, this command, keeps an
explanation only when it passes every filter, counted in this order:

- `no_prediction`: a manifest clip with no predictions row (not explained: left out);
- `format`: the completion is not `<think>…</think><answer>…</answer>` with a non-empty think;
- `answer`: the answer is not the clip's label (the policy did not follow the label it was given);
- `teacher`: the teacher (`lexicon`, with `emotion_map`, or a `verifier` folder) reads the think's sentences
  and the label is not the most frequent non-neutral label among them (all-neutral explanations fail too);
  `teacher: none` skips this filter.

The kept clips are written as a custom manifest (the original row, its `explanation` set to the think, `split:
train`, `explanation_source: bootstrap`) that an SFT config reads as its `data.manifest`; the counts are printed
and saved to `<output>.summary.json`. Costs and caveats (a weak policy writes weak explanations; the filters
only keep the ones a teacher agrees with) are in docs/custom_data.md.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ecr.data.manifests import read_custom_manifest
from ecr.errors import ConfigError, ECRError, ManifestError
from ecr.labels import NEUTRAL, LabelSet, get_label_set
from ecr.prompts import is_well_formed, parse_completion
from ecr.rows import BadRow, iter_rows
from ecr.sentences import get_splitter
from ecr.teachers.base import Missing, TeacherResult

JudgeName = Literal["lexicon", "verifier", "none"]
FILTERS = ("no_prediction", "format", "answer", "teacher")


def agreed_label(sentence_labels: Sequence[Sequence[str]]) -> list[str]:
    """The labels with the most votes among the non-neutral sentences (ties: all of them); [] if none."""
    votes = Counter(lbl for labels in sentence_labels for lbl in labels if lbl != NEUTRAL)
    if not votes:
        return []
    top = max(votes.values())
    return [lbl for lbl, n in votes.items() if n == top]


def rejection(
    completion: str | None, label: str, label_set: LabelSet, teacher_labels: Sequence[Sequence[str]] | None
) -> str | None:
    """Why one explanation is rejected (a FILTERS name), or None when it is kept. `teacher_labels`: the
    teacher's label set per think sentence (None: no teacher filter)."""
    if completion is None:
        return "no_prediction"
    parsed = parse_completion(completion)
    if not is_well_formed(completion, eos_tokens=("<|im_end|>", "<|endoftext|>")) or not parsed.think:
        return "format"
    if label_set.normalize(parsed.answer or "") != label:
        return "answer"
    if teacher_labels is not None and label not in agreed_label(teacher_labels):
        return "teacher"
    return None


def _answer_labels(result: TeacherResult) -> list[str]:
    """A teacher answer's labels; the offline lexicon always answers, so a `Missing` here is a bug."""
    if isinstance(result, Missing):
        raise RuntimeError(f"the lexicon teacher gave no answer ({result.reason}: {result.detail})")
    return list(result.labels)


def _teacher_fn(
    judge: JudgeName, label_set: LabelSet, verifier: Path | None, emotion_map: dict[str, str | None] | None
) -> Callable[[list[str]], list[list[str]]] | None:
    """sentences -> label set per sentence, from the lexicon teacher or a verifier folder (None for `none`)."""
    if judge == "none":
        return None
    if judge == "lexicon":
        from ecr.teachers.lexicon import LexiconTeacher

        lexicon = LexiconTeacher(list(label_set.labels), emotion_map=emotion_map)
        return lambda sents: [_answer_labels(r) for r in lexicon.label(sents)]
    if verifier is None:
        raise ConfigError("ecr explain: --teacher verifier needs --verifier DIR (a verifier folder)")
    from ecr.models.verifier import load_verifier

    return load_verifier(verifier).label_sets  # its own τ and label cap (`decide`)


def _predictions(path: Path) -> dict[str, str]:
    """id -> completion of a predictions JSONL (`ecr predict` rows, or an API teacher's in the same shape)."""
    out: dict[str, str] = {}
    for lineno, row in iter_rows(path, format="jsonl"):
        if isinstance(row, BadRow) or "id" not in row or not isinstance(row.get("completion"), str):
            raise ManifestError(f"{path}:{lineno}: a predictions row needs an 'id' and a 'completion' string")
        out[str(row["id"])] = row["completion"]
    return out


def bootstrap_explanations(
    predictions: Path,
    manifest: Path,
    labels: str | list[str],
    *,
    root: Path | None = None,
    teacher: JudgeName = "lexicon",
    verifier: Path | None = None,
    emotion_map: dict[str, str | None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The kept manifest rows (with `explanation`) and the counts per filter (see module docstring)."""
    label_set = get_label_set(labels)
    records = read_custom_manifest(manifest, root, label_set)
    raw = {n: r for n, r in iter_rows(manifest) if not isinstance(r, BadRow)}
    completions = _predictions(predictions)
    known = {r.id for r in records}
    if completions and not set(completions) & known:
        raise ManifestError(f"{predictions}: none of its ids is a clip of {manifest}")
    read = _teacher_fn(teacher, label_set, verifier, emotion_map)
    split = get_splitter("official")
    counts: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    explained = [r for r in records if r.id in completions]
    thinks = [parse_completion(completions[r.id]).think or "" for r in explained]
    per_clip = [split(t) for t in thinks]
    flat = read([s for sents in per_clip for s in sents]) if read is not None else None
    teacher_by_id: dict[str, list[list[str]]] = {}
    k = 0
    for r, sents in zip(explained, per_clip, strict=True):
        teacher_by_id[r.id] = flat[k : k + len(sents)] if flat is not None else []
        k += len(sents)
    for record in records:
        completion = completions.get(record.id)
        why = rejection(completion, record.label, label_set, teacher_by_id.get(record.id) if read else None)
        if why is not None:
            counts[why] += 1
            continue
        row = dict(raw[int(record.source.rsplit(":", 1)[1])])
        think = parse_completion(completion or "").think
        row.update(id=record.id, explanation=think, split="train", explanation_source="bootstrap")
        kept.append(row)
    summary = {
        "predictions": str(predictions),
        "manifest": str(manifest),
        "teacher": teacher,
        "clips": len(records),
        "explained": len(explained),
        "kept": len(kept),
        "rejected": {f: counts.get(f, 0) for f in FILTERS},
        "unknown_ids": len(set(completions) - known),
    }
    return kept, summary


def explain_command(
    predictions: Path,
    manifest: Path,
    output: Path,
    labels: str | list[str],
    root: Path | None = None,
    teacher: JudgeName = "lexicon",
    verifier: Path | None = None,
    emotion_map: dict[str, str | None] | None = None,
) -> int:
    """Keep the label-conditioned explanations that pass the filters and write them as an SFT manifest.

    Run `ecr predict` first on the training clips with an instruction holding `{label}` (docs/custom_data.md).

    Args:
        predictions: predictions JSONL of that run (`id`, `completion` per clip).
        manifest: the dataset's custom JSONL/CSV manifest (labels only is fine).
        output: the SFT manifest to write (kept rows, `explanation` = the think); `<output>.summary.json` too.
        labels: the label set (dfew, mafw or a list).
        root: dataset root for the manifest's paths (default: the manifest's folder).
        teacher: lexicon (offline NRC lexicon) | verifier (a verifier folder) | none: who must agree with the label.
        verifier: verifier folder for teacher=verifier.
        emotion_map: lexicon teacher: NRC emotion -> label (as `ecr label --emotion_map`).

    Returns 0 when at least one explanation was kept, 1 when none was, 2 on a bad input.
    """
    try:
        kept, summary = bootstrap_explanations(
            predictions, manifest, labels, root=root, teacher=teacher, verifier=verifier, emotion_map=emotion_map
        )
    except ECRError as err:
        print(f"ecr explain: error: {err}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    summary_path = output.with_name(output.name + ".summary.json")
    summary_path.write_text(json.dumps({**summary, "output": str(output)}, indent=2) + "\n")
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected"].items())
    print(f"ecr explain: {summary['clips']} clips, {summary['explained']} explained; rejected: {rejected}")
    print(f"kept {summary['kept']} explanations -> {output} (summary {summary_path.name})")
    if not kept:
        print("ecr explain: no explanation passed the filters (see docs/custom_data.md)", file=sys.stderr)
        return 1
    return 0

"""`ecr label`: turn descriptions into the ERV's training set with a teacher.

Input: JSONL or CSV rows with a text field — reasoning texts (EMER-style `explanation`, the synthetic
dataset's manifest), plain `text`, or the evaluation stage's predictions (a `completion` field; its `<think>`
block is used, rows without one are counted and skipped). Texts are split into sentences (the verifier scores
sentences), de-duplicated, labelled by a teacher (lexicon | openai | classifier) and written as JSONL rows
`{"text", "labels", "probs", "source", "group"}` that `ecr.data.sentences.SentenceDataModule` reads.

Missing teacher answers are counted per reason, excluded and reported — never turned into a label. A summary
(counts, missing, label distribution before/after balancing) is printed and saved next to the output as
`<output>.summary.json`. Balancing (`balance`) raises every class to `balance_ratio` x the largest class:
"oversample" repeats rows of rare classes, "paraphrase" asks the LLM teacher for paraphrases of them (they
keep the source row's labels). Augmented rows are marked `augmented: true` and share the source's `group`, so
they never leak into validation.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ecr.errors import ConfigError, ECRError, ManifestError, atomic_output
from ecr.labels import label_distribution
from ecr.prompts import extract_think
from ecr.rows import BadRow, iter_rows
from ecr.sentences import get_splitter
from ecr.teachers.balance import BalanceMode, balance_rows
from ecr.teachers.base import Missing, Teacher, TeacherLabel
from ecr.teachers.coverage import coverage_warnings
from ecr.teachers.label_report import LabelReport, format_report
from ecr.teachers.openai_chat import OpenAIConfig

__all__ = [
    "BalanceMode",
    "LabelReport",
    "TeacherName",
    "balance_rows",
    "check_output_path",
    "format_report",
    "label_command",
    "label_sentences",
    "make_teacher",
    "read_texts",
    "teacher_coverage_warnings",
    "write_rows",
]

TeacherName = Literal["lexicon", "openai", "classifier"]
_AUTO_FIELDS = ("text", "explanation", "reason", "reasons", "completion")


def read_texts(
    path: str | Path,
    *,
    text_field: str = "auto",
    splits: Sequence[str] | None = None,
    report: LabelReport | None = None,
) -> list[str]:
    """Texts of a JSONL/CSV/TSV file (`ecr.rows.iter_rows`: format by suffix, CSV column names lower-cased).

    text_field "auto": the first of text, explanation, reason(s), completion. A `completion` field yields its
    `<think>` block. `splits` keeps only rows whose `split` field is listed. Errors name `file:line`.
    """
    path = Path(path)
    report = report if report is not None else LabelReport()
    if not path.is_file():
        raise ManifestError(f"{path}: input file not found")
    skipped: Counter[str] = Counter()
    texts = []
    rows_read = 0
    for lineno, row in iter_rows(path):
        where = f"{path}:{lineno}"
        if isinstance(row, BadRow):
            if row.json_error is not None:
                raise ManifestError(f"{where}: not valid JSON ({row.json_error})")
            raise ManifestError(f"{where}: expected an object")
        rows_read += 1
        name = text_field
        if text_field == "auto":
            name = next((f for f in _AUTO_FIELDS if f in row), "")
            if not name:
                raise ManifestError(f"{where}: none of the fields {list(_AUTO_FIELDS)} present; set text_field")
        elif name not in row and name.strip().lower() in row:  # a CSV column: its name is lower-cased
            name = name.strip().lower()
        if name not in row:
            raise ManifestError(f"{where}: missing field {name!r}")
        if splits is not None and row.get("split") is not None and row["split"] not in splits:
            skipped["split"] += 1
            continue
        value = row[name]
        if not isinstance(value, str):
            raise ManifestError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        if name == "completion":
            think = extract_think(value)
            if think is None:
                skipped["no_think"] += 1
                continue
            value = think
        if not value.strip():
            skipped["empty"] += 1
            continue
        texts.append(value.strip())
    report.rows_read += rows_read
    for k, v in skipped.items():
        report.rows_skipped[k] = report.rows_skipped.get(k, 0) + v
    report.texts += len(texts)
    return texts


def _group(text: str) -> str:
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def _source(teacher: Teacher) -> str:
    s = teacher.settings()
    return f"{teacher.name}:{s['model']}" if "model" in s else teacher.name


def label_sentences(
    texts: Sequence[str],
    teacher: Teacher,
    *,
    split_sentences: bool = True,
    splitter: str = "official",
    dedupe: bool = True,
    report: LabelReport | None = None,
) -> list[dict[str, Any]]:
    """Split, de-duplicate and label texts; return training rows (missing answers counted and dropped)."""
    report = report if report is not None else LabelReport()
    split = get_splitter(splitter)
    pieces = [s for t in texts for s in (split(t) if split_sentences else [t.strip()])]
    report.sentences += len(pieces)
    if dedupe:
        seen: dict[str, str] = {}
        for p in pieces:
            seen.setdefault(_group(p), p)
        pieces = list(seen.values())
    report.unique_sentences += len(pieces)
    source = _source(teacher)
    rows = []
    missing: Counter[str] = Counter()
    for text, result in zip(pieces, teacher.label(pieces), strict=True):
        if isinstance(result, Missing):
            missing[result.reason] += 1
            continue
        assert isinstance(result, TeacherLabel)
        rows.append({"text": text, "labels": list(result.labels), "probs": result.probs, "source": source,
                     "group": _group(text)})  # fmt: skip
    report.labelled += len(rows)
    for k, v in missing.items():
        report.missing[k] = report.missing.get(k, 0) + v
    report.teacher = teacher.settings()
    return rows


def make_teacher(
    teacher: TeacherName,
    labels: str | Sequence[str],
    *,
    openai: OpenAIConfig | None = None,
    cache: str | Path | None = None,
    classifier_path: str | None = None,
    classifier_threshold: float = 0.5,
    emotion_map: dict[str, str | None] | None = None,
) -> Teacher:
    """Build a teacher by name (imports are local so the lexicon path never loads the API client)."""
    if emotion_map and teacher != "lexicon":
        raise ConfigError(f"emotion_map is an option of the lexicon teacher, not of teacher={teacher}")
    if teacher == "lexicon":
        from ecr.teachers.lexicon import LexiconTeacher

        return LexiconTeacher(labels, emotion_map=emotion_map)
    if teacher == "openai":
        from ecr.teachers.openai_chat import OpenAITeacher

        if cache is None:
            raise ConfigError("teacher=openai needs a cache path (every answer is stored before use)")
        return OpenAITeacher(labels, config=openai or OpenAIConfig(), cache_path=cache)
    if teacher == "classifier":
        from ecr.teachers.classifier import ClassifierTeacher

        if not classifier_path:
            raise ConfigError("teacher=classifier needs classifier_path (a local HF classification folder)")
        return ClassifierTeacher(classifier_path, labels, threshold=classifier_threshold)
    raise ConfigError(f"unknown teacher {teacher!r}; choose lexicon, openai or classifier")


def teacher_coverage_warnings(teacher: Teacher, rows: Sequence[dict[str, Any]]) -> list[str]:
    """`ecr.teachers.coverage` warnings for these labelled rows (the lexicon's unreachable labels included)."""
    labels = list(getattr(teacher, "label_names", ()) or sorted({lbl for r in rows for lbl in r["labels"]}))
    unreachable = teacher.unreachable_labels() if hasattr(teacher, "unreachable_labels") else []
    hint = (
        "; map the lexicon's emotions onto the labels with --emotion_map"
        if hasattr(teacher, "emotion_to_label")
        else ""
    )
    return coverage_warnings([r["labels"] for r in rows], labels, unreachable=unreachable, hint=hint)


def check_output_path(path: str | Path) -> None:
    """Refuse an output that exists and is not a regular file (a folder, or a device such as `/dev/null`, which
    the atomic rename of `write_rows` would replace with a regular file).

    Raises:
        ConfigError: naming the path.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        if path.is_dir():
            raise ConfigError(f"{path}: the output is a folder; give a file path (e.g. {path / 'train.jsonl'})")
        raise ConfigError(f"{path}: the output exists and is not a regular file; give a file path")


def write_rows(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write JSONL atomically (temp file + rename), so a crash never leaves half a training set."""
    path = Path(path)
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:  # a full disk: one line naming `path`, no .tmp left behind
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def label_command(
    input: Path,  # noqa: A002 - CLI option name
    output: Path,
    teacher: TeacherName = "lexicon",
    labels: str | list[str] = "dfew",
    text_field: str = "auto",
    splits: list[str] | None = None,
    split_sentences: bool = True,
    splitter: str = "official",
    dedupe: bool = True,
    balance: BalanceMode = "none",
    balance_ratio: float = 0.5,
    seed: int = 0,
    openai: OpenAIConfig = OpenAIConfig(),  # noqa: B008 - a frozen-by-convention default for jsonargparse
    cache: Path | None = None,
    classifier_path: str | None = None,
    classifier_threshold: float = 0.5,
    emotion_map: dict[str, str | None] | None = None,
) -> int:
    """Pseudo-label descriptions into the ERV training set (JSONL: text, labels, probs, source, group).

    Args:
        input: JSONL/CSV with a text field, or a predictions JSONL with `completion` (its <think> is used).
        output: labelled-sentence JSONL to write; `<output>.summary.json` gets the counts.
        teacher: lexicon (offline NRC lexicon) | openai (chat-completions API) | classifier (local HF model).
        labels: verifier label space: goemotions, dfew, mafw or a list (neutral is added to task sets).
        text_field: field holding the text; auto = first of text, explanation, reason, reasons, completion.
        splits: keep only input rows whose `split` field is one of these (e.g. [train]); rows without it stay.
        split_sentences: split texts into sentences (the verifier scores sentences).
        splitter: official (paper regex, matches the reward's default) or pysbd.
        dedupe: label each distinct sentence once.
        balance: none | oversample | paraphrase (LLM teacher only) for rare classes.
        balance_ratio: raise every class to this share of the largest class.
        seed: seed of the balancing draw.
        openai: chat teacher settings (model, base_url, api_key_env, concurrency, retries, timeout).
        cache: teacher answer cache (JSONL); default `<output>.cache.jsonl`.
        classifier_path: local HF classification folder for teacher=classifier.
        classifier_threshold: probability above which a classifier class is a label.
        emotion_map: lexicon teacher: NRC emotion (anger, anticipation, disgust, fear, joy, sadness, surprise,
            trust) -> label, e.g. `{joy: excited, anticipation: excited, fear: tense, anger: tense, sadness: bored,
            trust: calm}`; null drops an emotion. Needed for label sets the defaults cannot reach.

    Warns (stderr, and `warnings` in the summary) when most sentences fall to neutral or a label is never
    assigned, with the count per label.
    Returns 0 on success, 1 when nothing could be labelled, 2 on a configuration or input error.
    """
    try:
        check_output_path(output)  # before any teacher call is paid for
        report = LabelReport()
        t = _command_teacher(output, cache, teacher, labels, openai, classifier_path, classifier_threshold, emotion_map)
        texts = read_texts(input, text_field=text_field, splits=splits, report=report)
        rows = label_sentences(
            texts, t, split_sentences=split_sentences, splitter=splitter, dedupe=dedupe, report=report
        )
        rows = _tally_and_balance(rows, t, balance, balance_ratio, seed, report)
    except ECRError as exc:
        print(f"ecr label: error: {exc}", file=sys.stderr)
        return 2
    return _write_and_report(input, output, rows, report)


def _command_teacher(
    output: Path,
    cache: Path | None,
    teacher: TeacherName,
    labels: str | list[str],
    openai: OpenAIConfig,
    classifier_path: str | None,
    classifier_threshold: float,
    emotion_map: dict[str, str | None] | None,
) -> Teacher:
    """`make_teacher` for `ecr label`: the teacher's answer cache defaults to `<output>.cache.jsonl`."""
    cache_path = cache if cache is not None else output.with_name(output.name + ".cache.jsonl")
    return make_teacher(
        teacher, labels, openai=openai, cache=cache_path, classifier_path=classifier_path,
        classifier_threshold=classifier_threshold, emotion_map=emotion_map,
    )  # fmt: skip


def _tally_and_balance(
    rows: list[dict[str, Any]], teacher: Any, balance: BalanceMode, ratio: float, seed: int, report: LabelReport
) -> list[dict[str, Any]]:
    """The labelled rows balanced as asked; `report` gets the label distributions (before and after balancing),
    the teacher's coverage warnings, the written count and the teacher's call counts."""
    report.distribution = label_distribution(lbl for r in rows for lbl in r["labels"])
    report.warnings = teacher_coverage_warnings(teacher, rows)
    rows = balance_rows(rows, mode=balance, ratio=ratio, seed=seed, teacher=teacher, report=report)
    if balance != "none":
        report.distribution_after_balance = label_distribution(lbl for r in rows for lbl in r["labels"])
    report.written = len(rows)
    if counts := getattr(teacher, "counts", None):
        report.teacher = {**report.teacher, "calls": dict(counts)}
    return rows


def _write_and_report(source: Path, output: Path, rows: list[dict[str, Any]], report: LabelReport) -> int:
    """Write the rows (if any) and `<output>.summary.json`, print the report and warnings: `label_command`'s exit
    code (1 when nothing was labelled)."""
    if rows:
        write_rows(output, rows)
    summary = output.with_name(output.name + ".summary.json")
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"input": str(source), "output": str(output), **report.__dict__}, indent=2) + "\n")
    print(format_report(report))
    for warning in report.warnings:
        print(f"ecr label: WARNING: {warning}", file=sys.stderr)
    if not rows:
        print(f"ecr label: nothing labelled from {source} (see {summary})", file=sys.stderr)
        return 1
    print(f"wrote {len(rows)} rows to {output} (summary {summary.name})")
    return 0

"""`ecr data check`: validate every row of a dataset before spending a training run on it.

For each manifest row: the label is known and the path stays inside the root (manifest stage), the file
exists and decodes, it has an audio stream, the window has positive duration, and the audio and video
durations agree within a tolerance. All problems are collected (not just the first), printed as a summary
table, and written as JSON lines (`row, id, path, reason, detail`) so they can be fixed or filtered: to
`--bad_rows` or `data_check_bad_rows.jsonl` in the working directory, never into the dataset (it may be
read-only); the list is printed whether or not that file can be written.
Decoding runs in DataLoader worker processes, like training does.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ecr.data.decode import DURATION_TOLERANCE_S, decode_clip
from ecr.data.manifests import DatasetFormat, read_dataset
from ecr.data.requirements import stage_of
from ecr.data.stage_check import check_sentences, is_sentence_data, stage_problems
from ecr.data.types import ClipRecord
from ecr.errors import ClipError, ConfigError, ECRError, ManifestError
from ecr.labels import LabelSet, get_label_set

DEFAULT_BAD_ROWS = Path("data_check_bad_rows.jsonl")  # in the working directory, never inside the dataset


@dataclass(frozen=True)
class CheckProblem:
    """One bad row: where it is (`row` = manifest file:line), the media path, a reason tag and details."""

    row: str
    id: str
    path: str
    reason: str
    detail: str


@dataclass
class CheckReport:
    """Outcome of `check_dataset`."""

    total: int = 0
    problems: list[CheckProblem] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # total duration of the good clips

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def num_bad(self) -> int:
        return len({p.row for p in self.problems})

    def summary(self) -> str:
        """A plain-text table: totals, problems by reason, good clips by label and split."""
        reasons = Counter(p.reason for p in self.problems)
        rows = [
            ("rows", str(self.total)),
            ("good", str(self.total - self.num_bad)),
            ("bad", str(self.num_bad)),
        ]
        rows += [(f"  {r}", str(n)) for r, n in sorted(reasons.items())]
        rows += [("good duration (s)", f"{self.seconds:.1f}")]
        rows += [(f"label {k}", str(v)) for k, v in self.label_counts.items()]
        rows += [(f"split {k}", str(v)) for k, v in self.split_counts.items()]
        width = max(len(k) for k, _ in rows)
        lines = [f"{'item':<{width}}  count", f"{'-' * width}  -----"] + [f"{k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines)

    def write_bad_rows(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in self.problems))
        return path


class _CheckRows(Dataset):
    """Decodes one record per item and returns the problems found (decoding happens in the workers)."""

    def __init__(self, records: Sequence[ClipRecord], num_frames: int, sample_rate: int, tolerance: float) -> None:
        self.records, self.num_frames, self.sample_rate, self.tolerance = (
            records,
            num_frames,
            sample_rate,
            tolerance,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, list[CheckProblem], float]:
        return (i, *check_record(self.records[i], self.num_frames, self.sample_rate, self.tolerance))


def check_record(
    record: ClipRecord, num_frames: int = 8, sample_rate: int = 16000, tolerance: float = DURATION_TOLERANCE_S
) -> tuple[list[CheckProblem], float]:
    """Problems of one row (empty when it is usable) and the duration of its window in seconds."""

    def problem(path: object, reason: str, detail: str) -> CheckProblem:
        return CheckProblem(record.source, record.id, str(path), reason, detail)

    try:
        clip = decode_clip(
            record.video,
            num_frames=num_frames,
            start=record.start,
            end=record.end,
            sample_rate=sample_rate,
            audio_path=record.audio,
            tolerance=tolerance,  # the same duration rule training applies
        )
    except ClipError as err:
        return [problem(err.path, err.reason, err.detail)], 0.0
    problems: list[CheckProblem] = []
    return problems, clip.duration


def check_dataset(
    records: Sequence[ClipRecord],
    *,
    manifest_errors: Sequence[ManifestError] = (),
    num_frames: int = 8,
    sample_rate: int = 16000,
    tolerance: float = DURATION_TOLERANCE_S,
    num_workers: int = 0,
) -> CheckReport:
    """Decode every record (in `num_workers` processes) and collect all problems into a `CheckReport`.

    `manifest_errors` are rows that already failed while reading the manifest (unknown label, path escaping
    the root, bad fields); they are part of the report as reason "manifest".
    """
    report = CheckReport(total=len(records) + len(manifest_errors))
    for err in manifest_errors:
        where, _, detail = str(err).partition(": ")
        report.problems.append(CheckProblem(where, "", "", "manifest", detail or str(err)))
    loader = DataLoader(
        _CheckRows(records, num_frames, sample_rate, tolerance),
        batch_size=None,
        num_workers=num_workers,
        shuffle=False,
    )
    labels: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    for i, problems, seconds in loader:
        report.problems.extend(problems)
        if not problems:
            labels[records[i].label] += 1
            splits[records[i].split or "unassigned"] += 1
            report.seconds += seconds
    report.label_counts = dict(labels.most_common())
    report.split_counts = dict(sorted(splits.items()))
    return report


def _data_init_args(data: dict[str, Any] | None) -> dict[str, Any]:
    """init_args of a `data:` section (`{class_path, init_args}` or the init args themselves)."""
    if not data:
        return {}
    if "class_path" in data:
        if str(data["class_path"]).rsplit(".", 1)[-1] != "ClipDataModule":
            raise ConfigError(
                f"ecr data check: the config's data section is {data['class_path']}, "
                "not ecr.data.ClipDataModule (only clip datasets can be checked)"
            )
        return dict(data.get("init_args") or {})
    return dict(data)


def check_command(
    manifest: Path | None = None,
    root: Path | None = None,
    format: DatasetFormat | None = None,
    labels: str | list[str] | None = None,
    fold: int | None = None,
    num_frames: int | None = None,
    sample_rate: int | None = None,
    tolerance: float = DURATION_TOLERANCE_S,
    num_workers: int = 0,
    bad_rows: Path | None = None,
    data: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    seed_everything: int | bool | None = None,
    optimizer: dict[str, Any] | str | None = None,
    lr_scheduler: dict[str, Any] | str | None = None,
    ckpt_path: str | None = None,
) -> int:
    """Validate every row of a clip dataset and report all bad rows (exit code 1 if there is any).

    Checks that each file exists, decodes, has audio, has a positive duration, that its audio and video
    durations agree and that its label is known. Prints a summary table and writes the bad rows as JSON
    lines; exit code 1 if any row is bad (or the manifest cannot be read), 2 on a configuration error, 0
    when every row is usable.

    Use `--config stage.yaml` (its `data:` section is read, and what its stage needs: explanations for SFT,
    labelled sentences for ERV; other sections are ignored) or give the
    dataset directly with --manifest/--root/--format/--labels. Explicit options override the config.

    Args:
        manifest: manifest file (custom JSONL/CSV, EMER CSV).
        root: dataset root.
        format: custom, dfew, mafw or emer.
        labels: label set name (dfew, mafw) or list of labels.
        fold: DFEW/MAFW fold.
        num_frames: frames decoded per clip (as in training).
        sample_rate: audio sample rate (as in training).
        tolerance: allowed difference (s) between the audio and video durations.
        num_workers: decoding worker processes.
        bad_rows: where to write the bad rows (JSONL) when there are any; default `data_check_bad_rows.jsonl`
            in the working directory (never inside the dataset, which may be read-only).
        data: the `data:` section of a stage config (set by --config).
        trainer: ignored (a stage config's section).
        model: the stage a config trains (its `class_path`): its data needs are checked too (SFT: an
            explanation on every train/val row; ERV: labelled sentences with every label supported).
        seed_everything: ignored (a stage config's section).
        optimizer: ignored (a stage config's section).
        lr_scheduler: ignored (a stage config's section).
        ckpt_path: ignored (a stage config's section).
    """
    try:
        if is_sentence_data(data):  # the ERV stage's labelled sentences, not clips
            return check_sentences(data or {}, model)
        return _check(
            data, manifest, root, format, labels, fold, num_frames, sample_rate, tolerance, num_workers, bad_rows, model
        )
    except ECRError as err:  # a bad option or an unusable manifest (missing file, missing columns, bad encoding)
        print(f"ecr data check: error: {err}", file=sys.stderr)
        return 2


def _check(
    data: dict[str, Any] | None,
    manifest: Path | None,
    root: Path | None,
    format: str | None,
    labels: str | list[str] | None,
    fold: int | None,
    num_frames: int | None,
    sample_rate: int | None,
    tolerance: float,
    num_workers: int,
    bad_rows: Path | None,
    model: dict[str, Any] | None = None,
) -> int:
    """The check behind `check_command` (its arguments, config first then explicit options): exit code 0 or 1."""
    overrides = {
        "manifest": manifest,
        "root": root,
        "format": format,
        "labels": labels,
        "fold": fold,
        "num_frames": num_frames,
        "sample_rate": sample_rate,
    }
    args = _dataset_args(data, overrides)
    fmt = args.get("format", "custom")
    label_set: LabelSet = get_label_set(args.get("labels") or fmt)
    errors: list[ManifestError] = []
    records = read_dataset(fmt, args["root"], args.get("manifest"), label_set, int(args.get("fold", 1)), errors=errors)
    if not records and not errors:
        print(f"ecr data check: {fmt} dataset at {args['root']}: the manifest has no rows", file=sys.stderr)
        return 1
    report = check_dataset(
        records,
        manifest_errors=errors,
        num_frames=int(args.get("num_frames", 8)),
        sample_rate=int(args.get("sample_rate", 16000)),
        tolerance=tolerance,
        num_workers=num_workers,
    )
    report.problems += stage_problems(stage_of(model), records, args)
    print(f"ecr data check: {fmt} dataset at {args['root']} (labels {label_set.name}: {list(label_set.labels)})")
    print(report.summary())
    if report.ok:
        print(f"all {report.total} rows are usable")
        return 0
    _report_bad_rows(report, bad_rows)
    return 1


def _dataset_args(data: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config's `data` init args with the explicit options (not None) over them; a `ConfigError` when the
    root, or a custom/EMER dataset's labels, are given by neither."""
    args = _data_init_args(data)
    args.update({k: v for k, v in overrides.items() if v is not None})
    if args.get("root") is None:
        raise ConfigError("give --root (or --config with a data section that has root)")
    fmt = args.get("format", "custom")
    if fmt in ("custom", "emer") and args.get("labels") is None:
        raise ConfigError(f"format {fmt!r} needs --labels (dfew, mafw or a list)")
    return args


def _report_bad_rows(report: CheckReport, bad_rows: Path | None) -> None:
    """Print the first 50 bad rows to stderr and write all of them as JSON lines (`bad_rows` or the default)."""
    print(f"\n{report.num_bad} bad row(s):", file=sys.stderr)
    for p in report.problems[:50]:
        where = "".join(f"{f}: " for f in (p.path or p.id,) if f)  # a manifest row has neither: no empty field
        print(f"  {p.row}: {where}{p.reason}: {p.detail}", file=sys.stderr)
    if len(report.problems) > 50:
        print(f"  ... and {len(report.problems) - 50} more", file=sys.stderr)
    out = Path(bad_rows or DEFAULT_BAD_ROWS)  # never inside the dataset: it may be read-only or shared
    try:
        print(f"(all {len(report.problems)} written to {report.write_bad_rows(out)})", file=sys.stderr)
    except OSError as err:
        print(f"ecr data check: could not write the bad-row list to {out} ({err.strerror or err}); "
              "choose another file with --bad_rows", file=sys.stderr)  # fmt: skip

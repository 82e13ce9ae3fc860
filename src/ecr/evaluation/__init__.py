"""Evaluation: the predictions file writer, the explanation judges and `ecr score`.

- `PredictionWriter` (a Lightning `BasePredictionWriter`): `ecr predict` writes one JSONL row per clip, one
  file however many devices ran (per-rank part files merged by rank 0, checked for duplicates and gaps);
- judges of the explanation label ê: `VerifierJudge` (offline default: the ERV's per-sentence label sets,
  aggregated by `ecr.metrics.explanation_label`) and `LLMJudge` (the paper's prompt on any chat-completions
  server, through the teacher's client: bounded concurrency, retries with backoff, an append-only cache);
- `read_predictions` / `load_predictions` (a malformed line, an unknown label or a duplicate id is a
  `ManifestError` naming the line or, with `on_error="skip"`, counted; with a manifest, clips outside the split or
  without a prediction too), `score_predictions` and `score_command` (`ecr score`): metrics.json with WAR/UAR,
  EPC/EEA/FCR, the missing judge answers, per-class recall, the confusion matrix and the quadrants;
  `summary_table` (`summary`) is what `ecr score` prints;
- `write_report` / `report_command` (`ecr report`): one self-contained HTML page (+ PNGs from `plots`) for one
  or more predictions files side by side, every number from `score_predictions` / `compare_predictions`; the
  page's HTML is built in `page`;
- `clip_views` / `filter_clips` / `clips_table`: scored clips by quadrant or class (the report's examples and
  the explanations notebook pick clips with them).
"""

from ecr.lazy import lazy_exports

_EXPORTS = {
    "PredictionWriter": "writer",
    "merge_parts": "writer",
    "Judge": "judges",
    "LLMJudge": "judges",
    "StoredVerifierJudge": "judges",
    "VerifierJudge": "judges",
    "JUDGE_PROMPT": "judges",
    "Prediction": "predictions",
    "read_predictions": "predictions",
    "load_predictions": "predictions",
    "read_split": "manifest_split",
    "check_against_split": "predictions",
    "SkippedRows": "predictions",
    "PredictionsFile": "predictions",
    "BadPrediction": "predictions",
    "build_judges": "score",
    "score_command": "score",
    "score_predictions": "score",
    "summary_table": "summary",
    "dataset_split": "manifest_split",
    "DatasetSplitOptions": "manifest_split",
    "report_command": "report",
    "write_report": "report",
    "ClipView": "browse",
    "clip_views": "browse",
    "clips_table": "browse",
    "filter_clips": "browse",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

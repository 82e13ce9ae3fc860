"""Evaluation metrics (docs/method.md §5) as torchmetrics `Metric`s, plus the explanation-label rule of the verifier
judge.

- `RecognitionMetrics`: WAR, UAR, per-class recall and the confusion matrix from predicted and true class ids;
- `ExplanationMetrics`: EPC, EEA, FCR and the consistency quadrants from predicted, judged and true class ids,
  with the judge's missing answers counted beside them;
- `ClipMetrics` (`assembly`): the one assembly of the above into metrics.json's numbers, used by `ecr score`
  (a whole file at once) and `ecr test` (batch by batch, synced over ranks); `class_ids` maps labels to ids;
- `sentence_labels` / `explanation_label`: the verifier's label sets of a think text's sentences (read by the
  reward's `ecr.models.sentence_reader.SentenceReader`) and the rule that turns them into one explanation
  label ê (the offline judge);
- `bootstrap_interval` / `paired_bootstrap` / `mcnemar_exact`: percentile bootstrap intervals over clips for the
  headline metrics and paired tests between two prediction files (`ClipOutcomes` holds a file's per-clip ids);
- `judge_agreement` / `agreement_scores`: raw agreement and Cohen's κ between two judges;
- `CompoundAccuracy` / `compound_hits` / `label_mask`: accuracy against compound (multi-label) ground truth;
- `score_candidates` / `best_candidates`: the verifier's best-of-N reranking rule.

States are counts reduced with `dist_reduce_fx="sum"`, so the metrics give the same numbers on one device and
across DDP ranks. The maths are pure functions on tensors (`confusion_matrix`, `recognition_scores`,
`explanation_scores`), shared by the metrics and by `ecr score`. Class id -1 means "no label" (an unparseable
prediction, a missing judge answer).
"""

from ecr.lazy import lazy_exports

_EXPORTS = {
    "NO_LABEL": "recognition",
    "RecognitionMetrics": "recognition",
    "class_ids": "recognition",
    "ClipMetrics": "assembly",
    "headline": "assembly",
    "confusion_matrix": "recognition",
    "recognition_scores": "recognition",
    "ExplanationMetrics": "explanation",
    "SentenceLabels": "explanation",
    "explanation_label": "explanation",
    "explanation_scores": "explanation",
    "quadrant_counts": "explanation",
    "sentence_labels": "explanation",
    "verifier_mapping": "explanation",
    "ClipOutcomes": "intervals",
    "bootstrap_interval": "intervals",
    "mcnemar_exact": "intervals",
    "paired_bootstrap": "intervals",
    "percentile_interval": "intervals",
    "point_metrics": "intervals",
    "resampled_metrics": "intervals",
    "agreement_scores": "agreement",
    "judge_agreement": "agreement",
    "COMPOUND_RULE": "compound",
    "CompoundAccuracy": "compound",
    "compound_hits": "compound",
    "compound_scores": "compound",
    "label_mask": "compound",
    "CandidateScore": "rerank",
    "best_candidates": "rerank",
    "rank_key": "rerank",
    "score_candidates": "rerank",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

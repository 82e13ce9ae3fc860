"""Best-of-N reranking: which of a clip's N sampled candidates to keep, by the verifier (docs/method.md §5).

Each candidate is scored with the explanation reward of docs/method.md §3 (`ecr.rl.rewards.ExplanationReward`,
read through its one `SentenceReader`: the same splitter, sentence cap, τ, mapping and options) computed against
the candidate's OWN answer instead of the ground truth: the share of its (non-neutral) think sentences whose
verifier label set contains the emotion it answers. So the kept candidate is the one whose explanation best
supports its own prediction, and the truth is never looked at. The rule, per clip, the largest of:
1. whether the answer is a label of the set (a candidate with an unparseable or off-list answer has no score
   and loses to every candidate that has one);
2. the score (in [0, 1]);
3. format validity (`ecr.rl.rewards.format_reward`: `<think>…</think>` then `<answer>…</answer>`);
4. the earlier candidate (lower index) on a full tie, so the choice is deterministic.
All candidates of a batch go through one verifier call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ecr.labels import LabelSet
from ecr.prompts import parse_completion
from ecr.rl.rewards import format_reward

if TYPE_CHECKING:
    from ecr.rl.rewards import ExplanationReward


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's answer (canonical label or None), its verifier score against it, and its format."""

    prediction: str | None
    score: float | None  # None when the answer is no label of the set
    well_formed: bool


def score_candidates(
    reward: ExplanationReward, completions: Sequence[str], label_set: LabelSet
) -> list[CandidateScore]:
    """The rerank score of every completion (rule in the module docstring), one batched verifier call."""
    preds = [label_set.normalize(parse_completion(c).answer) for c in completions]
    answered = {i: p for i, p in enumerate(preds) if p is not None}
    scores: dict[int, float] = {}
    if answered:
        own = reward.score([completions[i] for i in answered], list(answered.values()))
        scores = {i: s.reward for i, s in zip(answered, own, strict=True)}
    formats = format_reward(completions)
    return [CandidateScore(p, scores.get(i), formats[i] == 1.0) for i, p in enumerate(preds)]


def rank_key(candidate: CandidateScore, index: int) -> tuple[bool, float, bool, int]:
    """Sort key of a candidate (larger is better): has a label, score, well formed, earlier index."""
    return (candidate.score is not None, candidate.score or 0.0, candidate.well_formed, -index)


def best_candidates(candidates: Sequence[CandidateScore], group_size: int) -> list[int]:
    """Index (0..group_size-1) of the kept candidate of each clip; candidates come as contiguous groups of N."""
    if group_size < 1 or len(candidates) % group_size:
        raise ValueError(f"{len(candidates)} candidates do not split into groups of {group_size}")
    out = []
    for start in range(0, len(candidates), group_size):
        group = candidates[start : start + group_size]
        out.append(max(range(group_size), key=lambda j: rank_key(group[j], j)))
    return out


__all__ = ["CandidateScore", "best_candidates", "rank_key", "score_candidates"]

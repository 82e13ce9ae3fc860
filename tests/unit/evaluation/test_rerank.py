"""Best-of-N reranking (docs/method.md §5): the verifier's score of each candidate against its OWN answer, ties by
format validity then index; and the PredictModule options that turn it on."""

from __future__ import annotations

import pytest

from ecr.errors import ConfigError
from ecr.labels import DFEW
from ecr.metrics.rerank import CandidateScore, best_candidates, score_candidates
from ecr.rl.rewards import ExplanationReward

from .fakes import KeywordVerifier, completion


def _reward() -> tuple[ExplanationReward, KeywordVerifier]:
    verifier = KeywordVerifier()
    return ExplanationReward(verifier, DFEW), verifier


def test_the_candidate_whose_explanation_supports_its_own_answer_is_kept() -> None:
    reward, verifier = _reward()
    group_a = [
        completion("She is sad. Sad eyes.", "happy"),  # explanation against its answer: 0
        completion("She is happy. A sad voice. Happy eyes.", "happy"),  # 2 of 3 sentences: 2/3
        completion("She is sad. Sad eyes.", "sad"),  # 1: the explanation supports ITS answer (truth unseen)
        completion("She is happy.", "jealous"),  # off-list answer: no score
    ]
    group_b = [
        completion(None, "happy"),  # no think: 0, not well formed
        completion("The room is grey.", "angry"),  # 0 (every sentence neutral), well formed
        completion("He is angry.", "bored"),  # off-list: loses even to a zero score
        completion("Calm.", "angry"),  # 0, well formed: ties with index 1, the earlier wins
    ]
    scores = score_candidates(reward, group_a + group_b, DFEW)
    assert verifier.calls == 1  # every candidate of the batch in one verifier call
    assert [s.prediction for s in scores] == ["happy", "happy", "sad", None, "happy", "angry", None, "angry"]
    assert [s.score for s in scores[:4]] == [0.0, pytest.approx(2 / 3), 1.0, None]
    assert [s.well_formed for s in scores[4:]] == [False, True, True, True]
    assert best_candidates(scores, 4) == [2, 1]


def test_ties_break_by_format_then_index_and_bad_groups_fail() -> None:
    c = CandidateScore
    assert best_candidates([c("happy", 0.5, False), c("sad", 0.5, True)], 2) == [1]
    assert best_candidates([c("happy", 0.5, True), c("sad", 0.5, True)], 2) == [0]
    assert best_candidates([c(None, None, True), c("sad", 0.0, False)], 2) == [1]
    assert best_candidates([c(None, None, False), c(None, None, True)], 2) == [1]
    assert best_candidates([c("happy", 1.0, True)], 1) == [0]
    with pytest.raises(ValueError, match="groups of 2"):
        best_candidates([c("happy", 1.0, True)] * 3, 2)


def test_best_of_n_options_are_checked_at_configuration() -> None:
    from ecr.modules.predict import PredictModule

    policy = {"model": "unused"}  # weights load in configure_model(): nothing is read here
    sampled = {"do_sample": True, "temperature": 0.3, "top_p": 0.9}
    with pytest.raises(ConfigError, match="num_samples: 4 candidates per clip need sampling"):
        PredictModule(policy, verifier="v", num_samples=4, rerank="verifier")
    with pytest.raises(ConfigError, match="need a rule to keep one: rerank: verifier"):
        PredictModule(policy, verifier="v", num_samples=4, generation=sampled)
    with pytest.raises(ConfigError, match="set `verifier:`"):
        PredictModule(policy, num_samples=4, rerank="verifier", generation=sampled)
    with pytest.raises(ConfigError, match="num_samples: 0 must be >= 1"):
        PredictModule(policy, num_samples=0)
    with pytest.raises(ConfigError, match="rerank: 'best'"):
        PredictModule(policy, rerank="best")  # type: ignore[arg-type]
    module = PredictModule(policy, verifier="v", num_samples=8, rerank="verifier", generation=sampled)
    assert (module.num_samples, module.rerank) == (8, "verifier")
    assert module.hparams["num_samples"] == 8 and module.hparams["rerank"] == "verifier"

"""The reward, the verifier judge's metric and the notebook table read one explanation identically.

They all read through one `SentenceReader` (splitter, mapping, τ, decision rule, sentence cap). The case that
used to differ: a completion with more than 64 sentences, which the reward capped and the metric did not.
"""

from __future__ import annotations

import torch

from ecr.evaluation.judges import VerifierJudge
from ecr.evaluation.predictions import Prediction
from ecr.explore import sentence_table
from ecr.labels import DFEW
from ecr.metrics.explanation import explanation_label, sentence_labels, verifier_mapping
from ecr.rl.rewards import ExplanationReward

NAMES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


class WordVerifier:
    """p = 0.9 for the class named by a word of the sentence ("angry", ...), else neutral."""

    label_names = NAMES
    threshold = 0.5

    def probs(self, sentences: list[str]) -> torch.Tensor:
        out = torch.zeros(len(sentences), len(NAMES))
        for i, s in enumerate(sentences):
            hits = [j for j, name in enumerate(NAMES) if name in s.lower()]
            out[i, hits or [NAMES.index("neutral")]] = 0.9
        return out


def test_a_completion_over_64_sentences_is_read_identically_by_the_reward_and_the_metric() -> None:
    """64 plain sentences, then 6 angry ones: within the cap the explanation is all neutral for every reader."""
    think = " ".join(f"The room has {i} chairs." for i in range(64)) + " He is angry." * 6
    completion = f"<think>{think}</think>\n<answer>angry</answer>"
    reward = ExplanationReward(WordVerifier(), DFEW)
    (score,) = reward.score([completion], ["angry"])
    (read,) = sentence_labels(reward, [completion])
    assert read is not None and score.capped
    assert len(read) == score.n_sentences == 64  # the metric reads exactly the sentences the reward scored
    neutral = [s for s in read if set(s["labels"]) == {"neutral"}]
    assert len(read) - len(neutral) == score.n_non_neutral == 0 and score.reward == 0.0
    # the judge's ê follows: every read sentence is neutral, so ê = neutral (not the angry tail beyond the cap)
    assert explanation_label(read, verifier_mapping(reward), DFEW.labels) == "neutral"
    judge = VerifierJudge(WordVerifier(), DFEW)
    prediction = Prediction(id="c", line=1, label="angry", prediction="angry", think=think, completion=completion)
    assert judge.judge([prediction]) == ["neutral"]
    assert len(sentence_table(reward, [completion], ["angry"])) == 64

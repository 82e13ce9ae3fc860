from __future__ import annotations

import torch

from ecr.explore import explanation_rewards_of_manifest, sentence_table
from ecr.rl.rewards import ExplanationReward


class KeywordVerifier:
    """Fake verifier: a sentence expresses an emotion iff it contains the emotion's word."""

    label_names = ["happy", "sad", "neutral"]

    def probs(self, sentences: list[str]) -> torch.Tensor:
        out = torch.full((len(sentences), 3), 0.01)
        for i, s in enumerate(sentences):
            hit = False
            for j, name in enumerate(self.label_names[:2]):
                if name in s.lower():
                    out[i, j], hit = 0.9, True
            if not hit:
                out[i, 2] = 0.9
        return out


def test_sentence_table_explains_the_reward() -> None:
    reward = ExplanationReward(KeywordVerifier(), ["happy", "sad", "neutral"])
    comps = ["<think>She looks happy. The room is bright. He seems sad.</think><answer>happy</answer>"]
    rows = sentence_table(reward, comps, ["happy"])
    assert [r["matches_truth"] for r in rows] == [True, False, False]
    assert list(rows[2]["labels"]) == ["sad"] and list(rows[1]["labels"]) == ["neutral"]
    assert reward(comps, ["happy"]) == [0.5]  # M=1 over N_nn=2 (the neutral sentence is ignored)


def test_manifest_rewards_grouped() -> None:
    reward = ExplanationReward(KeywordVerifier(), ["happy", "sad", "neutral"])
    rows = [
        {"label": "happy", "explanation": "She is happy.", "explanation_consistent": True},
        {"label": "happy", "explanation": "She is sad.", "explanation_consistent": False},
        {"label": "sad", "explanation": None},
    ]
    assert explanation_rewards_of_manifest(rows, reward) == {True: 1.0, False: 0.0}

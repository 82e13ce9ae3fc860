"""Rewards of docs/method.md §3 with a fake verifier whose probabilities are fixed per sentence."""

from __future__ import annotations

import pytest
import torch

from ecr.errors import ConfigError, LabelError
from ecr.labels import GOEMOTIONS_LABELS
from ecr.models.verifier import Verifier, decide
from ecr.rl.rewards import (
    AccuracyReward,
    CombinedReward,
    ExplanationReward,
    FormatReward,
    RewardSpec,
    RewardWithStats,
    TermResult,
    accuracy_reward,
    default_rewards,
    explanation_reward,
    format_reward,
)

LABELS = ["happy", "sad", "neutral", "angry"]  # verifier space of a task-trained ERV


class FakeVerifier:
    """Probabilities looked up per sentence; records every call."""

    def __init__(self, table: dict[str, dict[str, float]], label_names: list[str] = LABELS) -> None:
        self.label_names = list(label_names)
        self.table = table
        self.calls: list[list[str]] = []

    def probs(self, sentences: list[str]) -> torch.Tensor:
        self.calls.append(list(sentences))
        out = torch.zeros(len(sentences), len(self.label_names))
        for i, s in enumerate(sentences):
            for name, p in self.table[s].items():  # KeyError = the test forgot a sentence
                out[i, self.label_names.index(name)] = p
        return out


def think(*sentences: str, answer: str = "happy") -> str:
    return f"<think>{' '.join(sentences)}</think>\n<answer>{answer}</answer>"


S = {
    "He smiles.": {"happy": 0.9},
    "He laughs!": {"happy": 0.6, "angry": 0.2},
    "The room is grey.": {"neutral": 0.95},
    "He shouts.": {"angry": 0.8},
    "Tears fall.": {"sad": 0.7},
    "Mixed feelings.": {"happy": 0.5, "sad": 0.4, "angry": 0.3},  # 3 above τ -> top-2 = happy, sad
    "Weak cue.": {"happy": 0.05, "sad": 0.08},  # none above τ -> argmax = sad
    "Calm but smiling.": {"neutral": 0.6, "happy": 0.3},  # {neutral, happy}: not neutral
}


def reward(completions, labels, table=S, **kw):
    v = FakeVerifier(table)
    return ExplanationReward(v, LABELS, **kw)(completions, labels), v


def test_fake_is_a_verifier() -> None:
    assert isinstance(FakeVerifier(S), Verifier)


def test_basic_ratio_ignores_neutral_sentences() -> None:
    # 2 matching, 1 neutral, 1 other -> M/N_nn = 2/3
    r, v = reward([think("He smiles.", "The room is grey.", "He laughs!", "He shouts.")], ["happy"])
    assert r == [pytest.approx(2 / 3)]
    assert len(v.calls) == 1


def test_neutral_only_explanations() -> None:
    only_neutral = think("The room is grey.", "The room is grey.")
    r, _ = reward([only_neutral, only_neutral], ["happy", "neutral"])
    assert r == [0.0, 1.0]  # N_nn = 0 -> 0; truth neutral -> M/N = 2/2


def test_truth_neutral_divides_by_all_sentences() -> None:
    r, _ = reward([think("The room is grey.", "He smiles.", "Calm but smiling.")], ["neutral"])
    assert r == [pytest.approx(2 / 3)]  # grey and calm-but-smiling contain neutral


def test_neutral_plus_emotion_is_not_neutral() -> None:
    r, _ = reward([think("Calm but smiling.", "He shouts.")], ["happy"])
    assert r == [pytest.approx(1 / 2)]


def test_more_than_max_labels_keeps_top_by_probability() -> None:
    r, _ = reward([think("Mixed feelings.")] * 3, ["happy", "sad", "angry"])
    assert r == [1.0, 1.0, 0.0]  # angry (0.3) is third -> dropped
    r1, _ = reward([think("Mixed feelings.")], ["angry"], max_labels=3)
    assert r1 == [1.0]


def test_none_above_threshold_uses_argmax() -> None:
    r, _ = reward([think("Weak cue."), think("Weak cue.")], ["sad", "happy"])
    assert r == [1.0, 0.0]


def test_threshold_option_changes_label_sets() -> None:
    r, _ = reward([think("He laughs!")], ["angry"], threshold=0.1)
    assert r == [1.0]  # angry 0.2 > 0.1
    r, _ = reward([think("He laughs!")], ["angry"], threshold=0.3)
    assert r == [0.0]


def test_no_think_empty_think_and_no_sentences_never_call_verifier() -> None:
    completions = ["<answer>happy</answer>", "<think></think><answer>happy</answer>", "<think>   </think>", "plain"]
    r, v = reward(completions, ["happy"] * 4)
    assert r == [0.0, 0.0, 0.0, 0.0]
    assert v.calls == []  # no call at all when there is no sentence
    assert explanation_reward([], [], FakeVerifier(S)) == []


def test_one_batched_call_for_all_completions() -> None:
    completions = [think("He smiles.", "He shouts."), "<answer>sad</answer>", think("Tears fall.")]
    r, v = reward(completions, ["happy", "sad", "sad"])
    assert r == [0.5, 0.0, 1.0]
    assert v.calls == [["He smiles.", "He shouts.", "Tears fall."]]


def test_several_answer_tags_and_first_think_block() -> None:
    c = "<think>He smiles.</think><answer>sad</answer><think>Tears fall.</think><answer>happy</answer>"
    r, _ = reward([c], ["happy"])
    assert r == [1.0]  # only the first think block is scored
    assert accuracy_reward([c], ["happy"], "dfew") == [0.0]  # first answer wins
    assert accuracy_reward([c], ["sad"], "dfew") == [1.0]


def test_official_splitter_keeps_quotes_and_splits_abbreviations() -> None:
    table = {
        'She reads: "I am fine. Really." She smiles.': {"happy": 0.9},
        "Mr.": {"neutral": 0.9},
        "Smith frowns.": {"angry": 0.9},
    }
    r, v = reward([think('She reads: "I am fine. Really." She smiles.', "Mr. Smith frowns.")], ["angry"], table=table)
    assert v.calls == [['She reads: "I am fine. Really." She smiles.', "Mr.", "Smith frowns."]]
    assert r == [0.5]  # "Mr." is its own (neutral) sentence under the official rule


def test_pysbd_splitter_handles_abbreviations() -> None:
    table = {"Mr. Smith frowns.": {"angry": 0.9}, "He shouts.": {"angry": 0.8}}
    r, v = reward([think("Mr. Smith frowns.", "He shouts.")], ["angry"], table=table, splitter="pysbd")
    assert v.calls == [["Mr. Smith frowns.", "He shouts."]]
    assert r == [1.0]


def test_synonym_ground_truth_and_goemotions_mapping() -> None:
    table = {"He smiles.": {"joy": 0.9}, "He cries.": {"grief": 0.7}}
    v = FakeVerifier(table, list(GOEMOTIONS_LABELS))
    # auto mapping: a GoEmotions verifier uses the paper's table (happiness->joy, helplessness->grief)
    assert ExplanationReward(v, "mafw")([think("He smiles."), think("He cries.")], ["happiness", "helpless"]) == [
        1.0,
        1.0,
    ]
    assert ExplanationReward(v, "dfew")([think("He smiles.")], ["happy"]) == [1.0]


def test_unmappable_label_raises_when_configured() -> None:
    v = FakeVerifier(S)  # happy, sad, neutral, angry: no "fear" etc.
    with pytest.raises(LabelError, match="does not map"):
        ExplanationReward(v, "dfew", mapping="identity")
    with pytest.raises(LabelError):
        explanation_reward([think("He smiles.")], ["contempt"], v)
    ok = ExplanationReward(v, ["happy", "sad", "neutral", "angry"])
    with pytest.raises(LabelError, match="ground-truth"):
        ok([think("He smiles.")], ["fear"])


def test_verifier_saved_mapping_is_used() -> None:
    v = FakeVerifier({"He smiles.": {"happy": 0.9}})
    v.mapping = {"happiness": "happy", "sadness": "sad", "neutral": "neutral", "anger": "angry"}  # type: ignore[attr-defined]
    assert ExplanationReward(v, ["happiness", "sadness", "neutral", "anger"])([think("He smiles.")], ["happiness"]) == [
        1.0
    ]


def test_verifier_threshold_attribute_is_default() -> None:
    v = FakeVerifier(S)
    v.threshold = 0.3  # type: ignore[attr-defined]
    assert ExplanationReward(v, ["happy", "sad", "neutral", "angry"]).threshold == 0.3
    assert ExplanationReward(v, ["happy", "sad", "neutral", "angry"], threshold=0.1).threshold == 0.1


def test_decide_rule() -> None:
    p = torch.tensor([[0.9, 0.5, 0.3, 0.0], [0.05, 0.08, 0.01, 0.0], [0.0, 0.2, 0.0, 0.0]])
    assert decide(p, 0.1, 2).tolist() == [
        [True, True, False, False],
        [False, True, False, False],
        [False, True, False, False],
    ]
    assert decide(torch.zeros(0, 4), 0.1).shape == (0, 4)


def test_dedupe_and_penalty_against_gaming() -> None:
    repeated = think("He smiles.", "He smiles.", "He smiles.", "He shouts.")
    plain, _ = reward([repeated], ["happy"])
    assert plain == [0.75]
    dedup, v = reward([repeated], ["happy"], dedupe_sentences=True)
    assert dedup == [0.5] and v.calls == [["He smiles.", "He shouts."]]
    rw = ExplanationReward(FakeVerifier(S), LABELS, penalty=1.0, label_word_allowance=0.0)
    scores = rw.score([repeated], ["happy"])
    assert scores[0].duplicate_fraction == pytest.approx(0.5)
    assert scores[0].label_word_density == 0.0  # smiles/shouts are not label words
    assert scores[0].reward == pytest.approx(0.25)  # 0.75 - 1.0 * 0.5
    stuffed = think("He smiles.", answer="happy").replace("He smiles.", "He smiles. Happy happy happy joyful.")
    table = {**S, "Happy happy happy joyful.": {"happy": 0.99}}
    s2 = ExplanationReward(FakeVerifier(table), LABELS, penalty=1.0, label_word_allowance=0.1).score(
        [stuffed], ["happy"]
    )
    assert s2[0].base_reward == 1.0
    assert s2[0].label_word_density == pytest.approx(4 / 6)
    assert s2[0].reward == pytest.approx(1.0 - (4 / 6 - 0.1))
    assert rw.evaluate([repeated], ["happy"]).stats["duplicate_fraction"] == [pytest.approx(0.5)]


def test_format_reward_strict_vs_tolerant() -> None:
    good = "<think>a</think>\n<answer>happy</answer>"
    assert format_reward([good, good + "\n", good + "<|im_end|>", "<answer>x</answer>"], strict=True) == [1, 0, 0, 0]
    assert format_reward([good, good + "\n", "<answer>x</answer>"]) == [1.0, 1.0, 0.0]
    assert format_reward([good + "<|im_end|>"], eos_tokens=("<|im_end|>",)) == [1.0]
    assert FormatReward(strict=True)([good + "\n"], ["happy"]) == [0.0]


def test_accuracy_with_synonyms_and_missing_answer() -> None:
    cs = ["<answer> Happiness </answer>", "<answer>sad.</answer>", "<think>x</think>", "<answer>unhappy</answer>"]
    assert accuracy_reward(cs, ["happy", "sad", "sad", "happy"], "dfew") == [1.0, 1.0, 0.0, 0.0]
    assert AccuracyReward("mafw")(["<answer>happy</answer>"], ["happiness"]) == [1.0]


def test_combined_reward_returns_terms_and_weights() -> None:
    v = FakeVerifier(S)
    combo = default_rewards(v, ["happy", "sad", "neutral", "angry"], weights={"explanation": 2.0})
    out = combo([think("He smiles.", "He shouts.", answer="happy"), "junk"], ["happy", "sad"])
    assert out.terms == {"format": [1.0, 0.0], "accuracy": [1.0, 0.0], "explanation": [0.5, 0.0]}
    assert out.total == [3.0, 0.0]
    assert out.stats["explanation/n_sentences"] == [2.0, 0.0]
    with pytest.raises(ConfigError):
        CombinedReward([RewardSpec("a", FormatReward()), RewardSpec("a", FormatReward())])
    with pytest.raises(ConfigError):
        default_rewards(v, "dfew", weights={"bogus": 1.0}, mapping="identity")


def test_statistics_are_returned_not_stored() -> None:
    rw = ExplanationReward(FakeVerifier(S), LABELS)
    one, two = think("He smiles.", "He smiles."), think("He smiles.", "He shouts.", "He shouts.", "He shouts.")
    first = rw.evaluate([one], ["happy"])
    second = rw.evaluate([two, one], ["happy", "happy"])
    assert first.values == rw([one], ["happy"]) == [1.0]
    assert first.stats["n_sentences"] == [2.0] and first.stats["duplicate_fraction"] == [0.5]  # not overwritten
    assert second.stats["n_sentences"] == [4.0, 2.0] and second.values == [0.25, 1.0]
    assert set(first.stats) == set(ExplanationReward.STAT_KEYS)
    assert not hasattr(rw, "last_stats") and not hasattr(rw, "last_scores")
    assert isinstance(rw, RewardWithStats) and not isinstance(FormatReward(), RewardWithStats)


def test_combined_reward_logs_the_stats_of_any_term_with_evaluate() -> None:
    class Length:
        def evaluate(self, completions, labels):
            return TermResult(values=[1.0] * len(completions), stats={"chars": [float(len(c)) for c in completions]})

    out = CombinedReward([RewardSpec("len", Length(), 0.5), RewardSpec("fmt", lambda c, lbl: [0.0] * len(c))])(
        ["ab", "abcd"], ["happy", "sad"]
    )
    assert out.terms == {"len": [1.0, 1.0], "fmt": [0.0, 0.0]} and out.total == [0.5, 0.5]
    assert out.stats == {"len/chars": [2.0, 4.0]}


def test_none_completion_scores_zero_in_every_term_and_other_types_raise() -> None:
    reward = default_rewards(FakeVerifier(S), LABELS)
    out = reward([None, think("He smiles.")], ["happy", "happy"])  # type: ignore[list-item]
    assert out.terms["format"] == [0.0, 1.0] and out.terms["accuracy"] == [0.0, 1.0]
    assert out.terms["explanation"] == [0.0, 1.0]
    with pytest.raises(TypeError, match="completion 0 is a int"):
        reward([3], ["happy"])  # type: ignore[list-item]


def test_sentences_scored_per_completion_are_capped_and_counted() -> None:
    """A 10,000-sentence explanation costs what `max_sentences` do (one verifier call of that size)."""
    verifier = FakeVerifier(S)
    reward = ExplanationReward(verifier, LABELS, max_sentences=3)
    long = think(*(["He smiles."] * 2 + ["He shouts."] * 9998))
    result = reward.evaluate([long, think("He smiles.", "He shouts.")], ["happy", "happy"])
    assert verifier.calls == [["He smiles.", "He smiles.", "He shouts.", "He smiles.", "He shouts."]]
    assert result.values == [pytest.approx(2 / 3), 0.5]
    assert result.stats["capped"] == [1.0, 0.0] and result.stats["n_sentences"] == [3.0, 2.0]
    assert ExplanationReward(FakeVerifier(S), LABELS).max_sentences == 64  # on by default
    with pytest.raises(ConfigError, match="max_sentences"):
        ExplanationReward(FakeVerifier(S), LABELS, max_sentences=0)

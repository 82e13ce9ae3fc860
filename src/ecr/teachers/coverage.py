"""Does a teacher's labelling cover the label set? Loud warnings instead of a silently neutral verifier.

A custom label set (say calm, excited, bored, tense) may not be expressible by a teacher: the NRC lexicon's
emotions (joy, anger, ...) map onto none of them unless `emotion_map` says how, so most sentences fall to
neutral and some labels are never produced. A verifier distilled from such rows can never predict those
labels and the explanation reward then punishes every explanation of them. `ecr label` prints these warnings
(with the counts per label) and stores them in its summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ecr.labels import NEUTRAL

NEUTRAL_SHARE_WARNING = 0.5  # warn when more than this share of the labelled sentences is neutral only


def per_label_counts(label_lists: Iterable[Sequence[str]], labels: Sequence[str]) -> dict[str, int]:
    """Sentences carrying each label, every label of the set listed (0 included), in label-set order."""
    counts = dict.fromkeys(labels, 0)
    for lbls in label_lists:
        for lbl in set(lbls):
            counts[lbl] = counts.get(lbl, 0) + 1
    return counts


def coverage_warnings(
    label_lists: Sequence[Sequence[str]],
    labels: Sequence[str],
    *,
    unreachable: Sequence[str] = (),
    neutral_share: float = NEUTRAL_SHARE_WARNING,
    hint: str = "",
) -> list[str]:
    """Warnings (one line each) when most sentences are neutral, a label was never produced, or the teacher
    cannot produce a label except through the label's own word (`unreachable`); empty when coverage is fine."""
    if not label_lists:
        return []
    counts = per_label_counts(label_lists, labels)
    table = ", ".join(f"{k} {v}" for k, v in counts.items())
    out = []
    n_neutral = sum(1 for lbls in label_lists if set(lbls) <= {NEUTRAL})
    if n_neutral > neutral_share * len(label_lists):
        out.append(
            f"{n_neutral} of {len(label_lists)} sentences ({100 * n_neutral / len(label_lists):.0f} %) fell to neutral "
            f"(per label: {table}); the teacher may not express this label set{hint}"
        )
    never = [lbl for lbl in labels if lbl != NEUTRAL and counts.get(lbl, 0) == 0]
    if never:
        out.append(f"label(s) {never} were never assigned (per label: {table}): a verifier cannot learn them{hint}")
    if unreachable:
        out.append(
            f"label(s) {list(unreachable)} are reachable only through their own word: no lexicon emotion maps onto "
            f"them{hint}"
        )
    return out

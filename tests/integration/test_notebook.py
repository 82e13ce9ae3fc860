"""notebooks/explore_explanations.ipynb executed top to bottom in a real Jupyter kernel, on files this test makes.

The inputs are laid out like the demo's (the notebook's defaults): synthetic clips in demo_data/synth, a tiny
verifier folder in runs/demo_erv/verifier, and a predictions file shaped exactly like `ecr predict`'s rows (with
the verifier's stored sentence labels) passed through ECR_PREDICTIONS. The kernel is this interpreter
(jupyter_client runs a "python" kernelspec with sys.executable; the test checks it), and offline.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from ecr.evaluation.browse import clip_views, clips_table, filter_clips
from ecr.evaluation.judges import StoredVerifierJudge
from ecr.evaluation.predictions import read_predictions
from ecr.evaluation.score import score_predictions
from ecr.labels import DFEW, DFEW_LABELS, get_label_set, verifier_label_space
from ecr.prompts import format_target, parse_completion

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_explanations.ipynb"


def build_inputs(root: Path, labels: Sequence[str] = DFEW_LABELS, explanations: bool = True) -> Path:
    """Demo-shaped inputs under root; returns the predictions file (one row per clip, as `ecr predict` writes).

    `labels` other than DFEW's make a custom label set (the verifier gets them plus neutral, and no saved task);
    `explanations=False` leaves only `video` and `label` in the manifest, as in most real datasets."""
    from ecr.fixtures.synth import synthesize
    from ecr.fixtures.tiny_models import build_tiny_classifier
    from ecr.metrics.explanation import sentence_labels, verifier_mapping
    from ecr.models.verifier import load_verifier
    from ecr.rl.rewards import ExplanationReward

    task = get_label_set(labels if list(labels) != list(DFEW_LABELS) else "dfew")
    manifest = synthesize(
        root / "demo_data/synth", num_clips=8, labels=list(labels), inconsistent_fraction=0.25, size=32, duration=1.0
    )
    plain = build_tiny_classifier(root / "plain_classifier", verifier_label_space(task))
    folder = load_verifier(plain, threshold=0.5).save(root / "runs/demo_erv/verifier")
    reward = ExplanationReward(load_verifier(folder), task)
    clips = [json.loads(line) for line in manifest.read_text().splitlines()]
    if not explanations:
        manifest.write_text("".join(json.dumps({k: c[k] for k in ("id", "video", "label")}) + "\n" for c in clips))
    n = len(labels)
    answers = [c["label"] if i % 3 else labels[(labels.index(c["label"]) + 1) % n] for i, c in enumerate(clips)]
    completions = [format_target(c["explanation"], a) for c, a in zip(clips, answers, strict=True)]
    completions[-1] = f"<answer>{answers[-1]}</answer>"  # no think: the judge's MISSING
    verifier = {"path": str(folder), "threshold": reward.threshold, "mapping": verifier_mapping(reward)}
    rows = []
    for clip, text, sentences in zip(clips, completions, sentence_labels(reward, completions), strict=True):
        parsed = parse_completion(text)
        rows.append({
            "id": clip["id"], "label": clip["label"], "prediction": task.normalize(parsed.answer),
            "answer_text": parsed.answer, "think": parsed.think, "completion": text, "num_tokens": 40,
            "truncated": False, "sentences": sentences, "verifier": verifier,
            "generation": {"do_sample": False, "max_new_tokens": 96}, "seed": 0,
            "model": {"backbone": "qwen2_5_omni", "model": "tiny", "adapter": None, "checkpoint": None},
        })  # fmt: skip
    out = root / "elsewhere" / "predictions.jsonl"
    out.parent.mkdir()
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def outputs(cell: dict, mime: str) -> list[str]:
    found = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and mime == "text/plain":
            found.append(out["text"])
        elif mime in out.get("data", {}):
            found.append(out["data"][mime])
    return found


CUSTOM = ("calm", "excited", "bored", "tense")  # not a built-in label set (issue 18.6)


@pytest.mark.parametrize(
    ("labels", "explanations"), [(DFEW_LABELS, True), (CUSTOM, False)], ids=["dfew", "custom_without_explanations"]
)
def test_notebook_runs_top_to_bottom_on_a_predictions_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, labels: Sequence[str], explanations: bool
) -> None:
    import nbformat
    from nbclient import NotebookClient

    predictions = build_inputs(tmp_path, labels, explanations)
    task = DFEW if labels == DFEW_LABELS else get_label_set(list(labels))
    rows = read_predictions(predictions, task)
    metrics = score_predictions(rows, task, StoredVerifierJudge(task))
    views = clip_views(rows, metrics["explanations"])
    first = next(c for c in views if c.quadrant is not None)
    selected = filter_clips(views, quadrant=first.quadrant, truth=first.truth)
    expected_table = clips_table(selected)

    monkeypatch.setenv("ECR_PREDICTIONS", str(predictions))
    monkeypatch.setenv("ECR_QUADRANT", first.quadrant)
    monkeypatch.setenv("ECR_CLASS", first.truth)
    monkeypatch.delenv("ECR_CLIP", raising=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    assert outputs(code[-1], "text/plain") == [sys.executable + "\n"]
    printed = "".join(t for c in code for t in outputs(c, "text/plain"))
    assert f"8 clips from {predictions}" in printed and "judge: stored sentence labels" in printed
    assert f"task labels: {list(task.labels)}" in printed  # from the verifier folder or the manifest, not "dfew"
    markdown = [t for c in code for t in outputs(c, "text/markdown")]
    assert any(f"| WAR | {100 * metrics['war']:.2f} |" in t for t in markdown), markdown
    assert expected_table in markdown and f"| {first.id} |" in expected_table  # the filtered table
    assert len([p for c in code for p in outputs(c, "image/png")]) == 2  # confusion heat map, recall bars
    card = "".join(t for c in code for t in outputs(c, "text/html"))
    assert f'data-id="{selected[0].id}" open>' in card  # the first selected clip, beside its frames
    assert "data:image/png;base64," in card and 'class="sentence"' in card

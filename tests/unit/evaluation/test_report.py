"""`ecr report`: the page's numbers are `ecr score`'s, text from the files is escaped, runs compare side by side."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ecr.errors import ConfigError, ManifestError
from ecr.evaluation.browse import QUADRANTS, clip_views, clips_table, filter_clips
from ecr.evaluation.judges import StoredVerifierJudge, VerifierJudge
from ecr.evaluation.page import select_examples
from ecr.evaluation.predictions import read_predictions
from ecr.evaluation.report import report_command, run_names, write_report
from ecr.evaluation.score import compare_predictions, score_predictions
from ecr.labels import DFEW

from .fakes import KeywordVerifier, completion, write_predictions
from .test_score import _with_stored_sentences, rows

BOOT = 200


class Cells(HTMLParser):
    """The text of every `<td>` carrying data-* attributes, keyed by those attributes; img srcs; details ids."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[tuple[str, str], ...], str] = {}
        self.images: list[str] = []
        self.details: list[str] = []
        self._key: tuple[tuple[str, str], ...] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        data = tuple(sorted((k[5:], v or "") for k, v in attrs if k.startswith("data-")))
        if tag == "td" and data:
            self._key, self._text = data, []
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        elif tag == "details":
            self.details.append(dict(attrs).get("data-id") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._key is not None:
            self.cells[self._key] = " ".join("".join(self._text).split())
            self._key = None

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self._text.append(data)


def parse(page: Path) -> Cells:
    cells = Cells()
    cells.feed(page.read_text(encoding="utf-8"))
    return cells


def other_rows() -> list[dict]:
    """The same six clips with other answers (a second run): c1 now explained right, c2 and c5 predicted right."""
    out = rows()
    out[1]["completion"] = completion("She is happy.", "happy")
    out[2]["completion"] = completion("He is sad.", "sad")
    out[5]["completion"] = completion("She is sad.", "fear")
    return out


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "sft").mkdir()
    (tmp_path / "grpo").mkdir()
    a = write_predictions(tmp_path / "sft" / "predictions.jsonl", _with_stored_sentences(rows()))
    b = write_predictions(tmp_path / "grpo" / "predictions.jsonl", _with_stored_sentences(other_rows()))
    return a, b


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _interval(x: list[float]) -> str:
    return f"[{100 * x[0]:.2f}, {100 * x[1]:.2f}]"


def test_every_number_on_the_page_is_score_predictions(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    page = write_report([a, b], tmp_path / "report", labels="dfew", bootstrap=BOOT, seed=3)
    cells = parse(page).cells
    ra, rb = read_predictions(a, DFEW), read_predictions(b, DFEW)
    for name, preds in (("sft", ra), ("grpo", rb)):
        m = score_predictions(preds, DFEW, StoredVerifierJudge(DFEW), bootstrap=BOOT, seed=3)
        for key in ("war", "uar", "epc", "eea", "fcr"):
            expected = f"{_pct(m[key])} {_interval(m['intervals'][key])}"
            assert cells[(("metric", key), ("run", name))] == expected, (name, key)
        for key in ("n", "unparseable", "judged"):
            assert cells[(("metric", key), ("run", name))] == str(m[key])
        for q in QUADRANTS:
            assert cells[(("quadrant", q), ("run", name))] == str(m["quadrants"][q])
    assert cells[(("metric", "missing"), ("run", "sft"))] == "1 (no_think: 1)"
    cmp = compare_predictions(ra, rb, DFEW, StoredVerifierJudge(DFEW), bootstrap=BOOT, seed=3)
    for key, entry in cmp["metrics"].items():
        assert (
            cells[(("delta", "grpo"), ("metric", key))] == f"{100 * entry['delta']:+.2f} {_interval(entry['interval'])}"
        )
        assert cells[(("metric", key), ("p", "grpo"))] == f"{entry['p_value']:.3g}"
    assert cmp["metrics"]["war"]["delta"] == pytest.approx(2 / 6)  # c2 and c5 now right
    text = page.read_text()
    mc = cmp["mcnemar"]
    assert f"{mc['a_only']} clips right in sft only, {mc['b_only']} in grpo only" in text
    assert "UAR rule: UAR = mean recall over the classes of the label set that occur in the ground truth" in text
    summary = json.loads((page.parent / "report.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["sft", "grpo"]
    assert summary["comparisons"][0]["metrics"] == cmp["metrics"]


def test_figures_are_png_files_beside_the_page(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    page = write_report(list(two_runs), tmp_path / "r", labels="dfew", bootstrap=0)
    images = parse(page).images
    assert images == ["confusion_0.png", "confusion_1.png", "recall.png"]
    for name in images:
        assert (page.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "No intervals (bootstrap 0)." in text and "http://" not in text and "https://" not in text
    assert "<script" not in text


def test_examples_are_the_inconsistent_clips_with_their_sentence_labels(tmp_path: Path, two_runs) -> None:
    a, _ = two_runs
    page = write_report([a], tmp_path / "r", labels="dfew", bootstrap=0)
    preds = read_predictions(a, DFEW)
    explained = score_predictions(preds, DFEW, StoredVerifierJudge(DFEW))["explanations"]
    expected = [p.id for p in preds if explained[p.id] not in (None, p.prediction)]
    assert parse(page).details == expected == ["c1", "c2", "c5"]
    text = page.read_text()
    assert "3 of 6 clips have an explanation that names another emotion than the prediction; 3 shown." in text
    assert 'title="sad">She is sad.</span><span class="tag">sad 0.90</span>' in text
    assert "Sentence colours (verifier label set):" in text
    limited = write_report([a], tmp_path / "r2", labels="dfew", bootstrap=0, max_examples=1)
    assert parse(limited).details == ["c1"]


def test_a_verifier_model_gives_the_same_examples_as_the_stored_sentences(two_runs: tuple[Path, Path]) -> None:
    a, _ = two_runs
    preds = read_predictions(a, DFEW)
    from ecr.evaluation.page import Run

    def examples(judge):
        m = score_predictions(preds, DFEW, judge)
        run = Run("a", a, preds, m, clip_views(preds, m["explanations"]))
        return [(c.id, s) for c, s in select_examples([run], judge, 10)[0].shown]

    assert examples(VerifierJudge(KeywordVerifier(), DFEW)) == examples(StoredVerifierJudge(DFEW))


def test_text_from_the_files_is_escaped(tmp_path: Path) -> None:
    raw = rows()
    raw[1]["id"] = 'c1<u>&"x'
    raw[1]["completion"] = completion("She is sad <script>alert(1)</script>. Sad eyes.", "happy")
    path = write_predictions(tmp_path / "p.jsonl", _with_stored_sentences(raw))
    page = write_report([path], tmp_path / "r", labels="dfew", bootstrap=0, names=["<i>run</i>"])
    text = page.read_text()
    assert "<script>" not in text and "<i>run</i>" not in text and "<u>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;i&gt;run&lt;/i&gt;" in text
    assert parse(page).details[0] == 'c1<u>&"x'  # the parser unescapes the attribute back to the id


def test_judge_none_has_recognition_metrics_only(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.jsonl", rows())  # no stored sentences: fine without a judge
    page = write_report([path], tmp_path / "r", labels="dfew", judge="none", bootstrap=0)
    cells = parse(page).cells
    assert cells[(("metric", "war"), ("run", "p"))] == _pct(4 / 6)
    assert not any(("metric", "epc") in k for k in cells) and not any(("quadrant", QUADRANTS[0]) in k for k in cells)
    assert "No judge (judge none)" in page.read_text()


def test_bad_input_is_the_same_error_as_ecr_score(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    bad = tmp_path / "bad.jsonl"
    bad.write_text(a.read_text() + "{not json\n")
    with pytest.raises(ManifestError, match=r"bad\.jsonl:7"):
        write_report([a, bad], tmp_path / "r", labels="dfew", bootstrap=0)
    fewer = write_predictions(tmp_path / "fewer.jsonl", [json.loads(x) for x in b.read_text().splitlines()[:4]])
    with pytest.raises(ConfigError, match=r"fewer\.jsonl vs .*sft/predictions\.jsonl: compare: .*same clips"):
        write_report([a, fewer], tmp_path / "r", labels="dfew", bootstrap=0)
    no_sentences = write_predictions(tmp_path / "plain.jsonl", rows())
    with pytest.raises(ConfigError, match="no stored verifier sentence labels"):
        write_report([no_sentences], tmp_path / "r", labels="dfew", bootstrap=0)
    with pytest.raises(ConfigError, match="names: 1 names for 2"):
        write_report([a, b], tmp_path / "r", labels="dfew", names=["x"])
    with pytest.raises(ConfigError, match="judge: 'openai' is not verifier, cue or none"):
        write_report([a], tmp_path / "r", labels="dfew", judge="openai")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bootstrap: -1"):
        write_report([a], tmp_path / "r", labels="dfew", bootstrap=-1)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        write_report([a], tmp_path / "file", labels="dfew")


def test_run_names_are_stems_then_folders_then_unique() -> None:
    assert run_names([Path("x/sft.jsonl"), Path("x/grpo.jsonl")]) == ["sft", "grpo"]
    assert run_names([Path("r/sft/predictions.jsonl"), Path("r/grpo/predictions.jsonl")]) == ["sft", "grpo"]
    assert run_names([Path("a/run/p.jsonl"), Path("b/run/p.jsonl")]) == ["a/run/p", "b/run/p"]
    assert run_names([Path("p.jsonl"), Path("p.jsonl")]) == ["p", "p#2"]
    assert run_names([Path("p.jsonl")], ["mine"]) == ["mine"]
    with pytest.raises(ConfigError, match="unique"):
        run_names([Path("a.jsonl"), Path("b.jsonl")], ["x", "x"])


def test_clip_views_agree_with_the_quadrant_counts(two_runs: tuple[Path, Path]) -> None:
    preds = read_predictions(two_runs[0], DFEW)
    m = score_predictions(preds, DFEW, StoredVerifierJudge(DFEW))
    views = clip_views(preds, m["explanations"])
    assert {q: len(filter_clips(views, quadrant=q)) for q in QUADRANTS} == m["quadrants"]
    assert [c.id for c in filter_clips(views, truth="sad")] == ["c2", "c3"]
    assert [c.id for c in filter_clips(views, truth="happy", quadrant=QUADRANTS[1])] == ["c1"]
    assert "| c3 | sad | sad | (missing) | - |" in clips_table(views)
    with pytest.raises(ConfigError, match="quadrant: 'right' is not one of"):
        filter_clips(views, quadrant="right")


def test_report_command_parses_like_the_cli(tmp_path: Path, two_runs, monkeypatch, capsys) -> None:
    import ecr.cli
    from ecr.cli import run_extra

    monkeypatch.setitem(ecr.cli.EXTRA_COMMANDS, "report", "ecr.evaluation.report:report_command")
    a, b = two_runs
    out = tmp_path / "r"
    argv = ["report", "--predictions", f"[{a}, {b}]", "--labels", "dfew", "--out", str(out), "--bootstrap", "0"]
    assert run_extra([*argv, "--names", "[base, new]", "--max-examples", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert ("delta", "new") in {k[0] for k in parse(out / "index.html").cells}
    assert report_command(a, "dfew", tmp_path / "single", bootstrap=0) == 0  # one file, no list


def test_every_option_has_help() -> None:
    from tests.unit.core.test_option_help import undocumented

    assert undocumented(report_command, function=True) == []


@pytest.mark.skipif(
    "report" not in __import__("ecr.cli").cli.EXTRA_COMMANDS, reason="`report` is not registered in EXTRA_COMMANDS"
)
def test_ecr_report_subprocess(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    ecr = shutil.which("ecr", path=str(Path(sys.executable).parent))
    assert ecr is not None
    a, b = two_runs
    done = subprocess.run(
        [ecr, "report", "--predictions", f"[{a}, {b}]", "--labels", "dfew", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "index.html").is_file()
    bad = subprocess.run([ecr, "report", "--predictions", str(tmp_path / "nope.jsonl"), "--labels", "dfew",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "nope.jsonl" in bad.stderr


def test_compound_truth_gets_its_own_row(tmp_path: Path) -> None:
    raw = _with_stored_sentences(rows())
    raw[2]["labels"] = ["sad", "happy"]  # c2 predicted happy: right under its compound truth
    raw[5]["labels"] = ["fear", "surprise"]  # c5 unparseable: wrong
    path = write_predictions(tmp_path / "p.jsonl", raw)
    m = score_predictions(read_predictions(path, DFEW), DFEW, StoredVerifierJudge(DFEW))
    cells = parse(write_report([path], tmp_path / "r", labels="dfew", bootstrap=0)).cells
    assert m["compound"]["n"] == 2 and m["compound"]["accuracy"] == pytest.approx(0.5)
    assert cells[(("metric", "compound"), ("run", "p"))] == f"{_pct(m['compound']['accuracy'])} (2 clips)"


def test_a_verifier_folder_judges_and_labels_the_sentences(tmp_path: Path) -> None:
    from ecr.fixtures.tiny_models import build_tiny_classifier
    from ecr.labels import DFEW_LABELS

    folder = build_tiny_classifier(tmp_path / "verifier", DFEW_LABELS)
    path = write_predictions(tmp_path / "p.jsonl", rows())  # no stored sentences: the folder's model reads them
    page = write_report([path], tmp_path / "r", labels="dfew", verifier=folder, bootstrap=0)
    judge = VerifierJudge(folder, DFEW)
    m = score_predictions(read_predictions(path, DFEW), DFEW, judge)
    summary = json.loads((page.parent / "report.json").read_text())["runs"][0]["metrics"]
    assert summary["judge"]["verifier"] == str(folder) and summary["epc"] == m["epc"]
    views = clip_views(read_predictions(path, DFEW), m["explanations"])
    assert parse(page).details == [c.id for c in filter_clips(views, inconsistent=True)]
    shown = filter_clips(views, inconsistent=True)
    assert shown and page.read_text().count('<span class="tag">') >= len(shown)  # the model's sentence labels


def test_the_cue_judge_judges_the_page_and_colours_its_sentences(tmp_path: Path) -> None:
    """`ecr report --judge cue --cue_table T`: the explanation metrics and the examples come from the table."""
    from ecr.fixtures.synth import cue_table

    table = tmp_path / "cue_table.json"
    table.write_text(json.dumps({"labels": list(DFEW.labels), "sentences": cue_table("dfew")}))
    sad = "The voice is low and falls slowly, sounding sad. Overall the person seems sad."
    happy = "The character's mouth curves upward into a broad smile. Overall the person seems happy."
    raw = [
        {"id": "c0", "label": "happy", "completion": completion(sad, "happy")},  # follows the voice: inconsistent
        {"id": "c1", "label": "happy", "completion": completion(happy, "happy")},
    ]
    path = write_predictions(tmp_path / "p.jsonl", raw)  # no stored verifier sentences: the cue judge needs none
    page = write_report([path], tmp_path / "r", labels="dfew", judge="cue", cue_table=table, bootstrap=0)
    cells = parse(page).cells
    assert cells[(("metric", "epc"), ("run", "p"))] == _pct(1 / 2)
    assert parse(page).details == ["c0"]  # the one inconsistent explanation, shown
    text = page.read_text()
    assert "judge: cue" in text and "unmatched_sentences: 0" in text
    with pytest.raises(ConfigError, match="needs --cue_table"):
        write_report([path], tmp_path / "r2", labels="dfew", judge="cue", bootstrap=0)

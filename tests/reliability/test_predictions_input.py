"""`ecr score` on a predictions file with bad rows, through the CLI in a subprocess: with the default
`--on-error raise` one or two lines naming `file:line`, exit code 2 and no traceback; with `--on-error skip`
exit 0, metrics over the good rows and the skipped count printed at the end."""

from __future__ import annotations

import json
from pathlib import Path

from faults import run_ecr


def test_ecr_score_bad_rows_raise_or_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [{"id": f"c{i}", "label": lbl, "prediction": lbl} for i, lbl in enumerate(["happy", "sad", "angry"])]
    bad = ["{not json", json.dumps({"id": "c0", "label": "sad", "prediction": "sad"})]  # malformed, duplicate
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + "".join(x + "\n" for x in bad), encoding="utf-8")
    args = ["score", str(path), "--labels", "dfew", "--judge", "none", "--bootstrap", "0"]

    proc = run_ecr(args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ecr") and "error" in line]
    assert len(errors) == 1 and f"{path}:4: invalid JSON" in errors[0], proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) <= 2

    proc = run_ecr([*args, "--on-error", "skip"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| WAR | 100.00 |" in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{path}: skipped 2 bad rows (duplicate_id: 1, malformed: 1); first: {path}:4: ")
    metrics = json.loads((tmp_path / "pred.jsonl.metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 3 and metrics["skipped"] == {"duplicate_id": 1, "malformed": 1}

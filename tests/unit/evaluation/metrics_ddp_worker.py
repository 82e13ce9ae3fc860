"""One rank of the 2-process metrics test (run as a script): `python metrics_ddp_worker.py RANK PORT OUT`.

Each rank updates the metrics with its interleaved, uneven shards of the same 101 clips and writes the synced
results as JSON to OUT.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from ecr.labels import DFEW_LABELS
from ecr.metrics import ExplanationMetrics, RecognitionMetrics


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (101,), generator=g)  # class 6 never occurs
    pred = torch.randint(-1, 7, (101,), generator=g)
    expl = torch.randint(-1, 7, (101,), generator=g)
    return pred, expl, target


def results(rec: RecognitionMetrics, exp: ExplanationMetrics) -> dict:
    r, e = rec.compute(), exp.compute()
    return {
        "war": float(r["war"]),
        "uar": float(r["uar"]),
        "confusion": r["confusion"].tolist(),
        **{k: float(e[k]) for k in ("epc", "eea", "fcr", "missing")},
    }


def main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pred, expl, target = data()
        rec, exp = RecognitionMetrics(DFEW_LABELS), ExplanationMetrics()
        for start in range(rank * 7, 101, 14):  # interleaved shards of 7 clips; rank 0 gets one more
            sl = slice(start, start + 7)
            rec.update(pred[sl], target[sl])
            exp.update(pred[sl], expl[sl], target[sl])
        with open(out, "w") as fh:
            json.dump(results(rec, exp), fh)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])

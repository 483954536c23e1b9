"""Every objective evaluation of a scoring job (a fusion search, the oracle subset, the landscape) recorded,
and replayed by a rerun of an interrupted job.

Given a journal file, a rerun of an interrupted job replays the journaled evaluations, and a search takes the
journaled BO points instead of proposing them again.
"""

import json
import os
import time
from pathlib import Path

from ..io import write_jsonl
from .points import point_record


class JournaledObjective:
    """An objective whose evaluations are recorded (the point: weights or a merge; scores, seconds) and, given
    a ``path``, appended to a JSON-lines journal there, flushed and fsynced one line per evaluation.

    A rerun replays the journal: the k-th evaluation returns the k-th record when its point is exactly the
    recorded one (JSON round-trips float64 exactly). Fusion methods, the oracle and the landscape are
    deterministic, so a rerun asks for the same points in the same order; from the first mismatch on, the rest of the journal is stale
    and is dropped. The first line names what the journal was written for (``identity``); a journal written
    for anything else is discarded whole. Attributes other than calls are the wrapped objective's.
    """

    def __init__(self, objective, path: str | Path | None = None, identity: dict | None = None):
        self.objective, self.path = objective, Path(path) if path is not None else None
        self.header = {"identity": json.loads(json.dumps(identity))}
        self.records: list[dict] = []  # this run's evaluations, replayed or new
        self.pending = self._read_journal() if self.path is not None else []
        self.evaluations = self.replayed = 0
        if self.path is not None:
            write_jsonl(self.path, [self.header, *self.pending])  # drops a torn last line

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, point) -> dict[str, float]:
        return self.evaluate(point)["scores"]

    def next_weights(self) -> list[float] | None:
        """The weights of the next journaled evaluation, if any is left to replay."""
        return self.pending[0].get("weights") if self.pending else None

    def evaluate(self, point, proposal_seconds: float = 0.0) -> dict:
        """The record of one evaluation: replayed from the journal, or measured (and then journaled);
        ``proposal_seconds`` is the time the caller spent choosing ``point``."""
        self.evaluations += 1
        key = point_record(point)
        record = self._replay(key)
        if record is None:
            started = time.perf_counter()
            scores = self.objective(point)
            record = {**key, "scores": scores, "seconds": time.perf_counter() - started,
                      "proposal_seconds": proposal_seconds}
            self._append(record)
        self.records.append(record)
        return record

    def _replay(self, key: dict) -> dict | None:
        if self.pending and all(self.pending[0].get(name) == value for name, value in key.items()):
            self.replayed += 1
            return self.pending.pop(0)
        if self.pending:
            print(f"{self.path}: evaluation {self.evaluations} asks for another point than journaled; "
                  f"dropping the {len(self.pending)} stale records from there on", flush=True)
            self.pending = []
            write_jsonl(self.path, [self.header, *self.records])
        return None

    def _append(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def _read_journal(self) -> list[dict]:
        """The records of an existing journal written for the same identity."""
        if not self.path.is_file():
            return []
        lines = []
        # A kill mid-write leaves a torn last line (no newline): it and anything unreadable end the journal.
        for line in self.path.read_text(encoding="utf-8").split("\n")[:-1]:
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                break
        if lines and lines[0] != self.header:
            print(f"{self.path}: written for other inputs or settings; discarding it", flush=True)
            return []
        return lines[1:]

    def discard(self) -> None:
        """Remove the journal once what it protected is complete."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

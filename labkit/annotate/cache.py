"""A persistent answer cache: one SQLite file, one row per (model, decoding, prompt).

Every batch of answers is committed as soon as it arrives, so an interrupted run (Ctrl-C, a dead
kernel, a lost connection) keeps what it already paid for and resumes where it stopped; a rerun
costs nothing. SQLite commits are atomic: an interruption never leaves half a row.

The key is a SHA-256 of the model fingerprint, the decoding parameters and the chat messages
(`make_request`, `request_key`); the row also keeps the request itself, readable, for inspection.
No credential is ever part of a key or a row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    reply TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""


def make_request(
    model: str, decoding: Mapping[str, Any], messages: list[dict[str, str]]
) -> dict[str, Any]:
    """What decides an answer: the model fingerprint, the decoding parameters, the messages."""
    return {"model": model, "decoding": dict(decoding), "messages": messages}


def request_key(request: Mapping[str, Any]) -> str:
    """The cache key of a request: SHA-256 of its canonical JSON."""
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AnswerCache:
    """Answers on disk, keyed by `request_key`; one file per project, e.g. runs/answers.sqlite."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The cached replies among `keys` (missing keys are simply absent)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        # SQLite limits the number of '?' in one statement; ask in chunks.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, reply FROM answers WHERE key IN ({marks})"
            found.update({k: json.loads(r) for k, r in self._db.execute(query, chunk)})
        return found

    def put_many(self, rows: Iterable[tuple[str, Mapping[str, Any], Mapping[str, Any]]]) -> None:
        """Store (key, request, reply) rows and commit them together."""
        values = [
            (key, request["model"], json.dumps(request, ensure_ascii=False), json.dumps(reply))
            for key, request, reply in rows
        ]
        with self._db:  # one transaction: all rows or none
            self._db.executemany(
                "INSERT OR REPLACE INTO answers (key, model, request, reply) VALUES (?, ?, ?, ?)",
                values,
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r}, {len(self)} answers)"

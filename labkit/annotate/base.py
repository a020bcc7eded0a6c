"""The one annotator interface: records as text in, a DataFrame of answers out.

An annotator asks an LLM about each record in one of three modes:

- "hard": the Yes/No prompt; the generated word is parsed to 1 / 0;
- "verbalized": the probability prompt (SERVAL's); the generated number is parsed;
- "token": the Yes/No prompt, no generation: P(Yes) / (P(Yes) + P(No)) read from the next-token
  distribution at the answer position.

Subclasses (LocalAnnotator, OpenAIAnnotator) only say who answers (`_reply`) and what identifies
the model (`fingerprint`) and the decoding (`decoding`). This class builds the prompts, asks only
what the cache does not hold, commits each batch to the cache at once, and parses the answers.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from labkit.annotate.cache import AnswerCache, make_request, request_key
from labkit.annotate.parse import Parsed, parse_probability, parse_yes_no
from labkit.chat import Messages
from labkit.data.schema import Task
from labkit.prompts import probability_prompt, yes_no_prompt

if TYPE_CHECKING:
    from labkit.data import Dataset
    from labkit.data.text import Style

Mode = Literal["hard", "verbalized", "token"]
MODES: tuple[str, ...] = ("hard", "verbalized", "token")
# A reply: {"text": generated answer} in hard/verbalized mode; {"p_yes": mass, "p_no": mass} in
# token mode (probability mass on the Yes and No answer tokens, not normalized).
Reply = dict[str, Any]
PromptFn = Callable[[str, Task], str]


class Annotator(ABC):
    """Ask an LLM about records; see the module docstring for the modes.

    cache: an AnswerCache or a path to one (None: no cache). batch_size: prompts per call to
    `_reply`; each batch is committed to the cache before the next starts. prompt: a function
    (record text, task) -> user message, instead of the kit's templates (labkit.prompts).
    system: an optional system message.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        cache: AnswerCache | str | Path | None = None,
        batch_size: int = 8,
        prompt: PromptFn | None = None,
        system: str | None = None,
        progress: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.mode = mode
        self.cache = AnswerCache(cache) if isinstance(cache, str | Path) else cache
        self.batch_size = batch_size
        self.prompt = prompt or (probability_prompt if mode == "verbalized" else yes_no_prompt)
        self.system = system
        self.progress = progress

    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the model: changes whenever its answers could (weights, template, server)."""

    @abstractmethod
    def decoding(self) -> dict[str, Any]:
        """The parameters besides the messages that change an answer (mode, max tokens, ...)."""

    @abstractmethod
    def _reply(self, conversations: list[Messages]) -> list[Reply]:
        """Ask the model: one reply per conversation, in order."""

    def messages(self, text: str, task: Task) -> Messages:
        """The chat messages for one record."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": self.prompt(text, task)}]

    def annotate(self, texts: Sequence[str], task: Task) -> pd.DataFrame:
        """Ask about every record text; one row per text, in order.

        Columns: prompt (the user message), raw (the answer as given), value (the parsed value:
        1/0 for hard, a probability otherwise; NaN when missing), reason ("" or why the value is
        missing); token mode adds p_yes and p_no (the unnormalized masses).
        `frame.attrs` counts n_sent (prompts sent now), n_cached (rows answered from the cache)
        and n_missing.
        """
        if isinstance(texts, str):
            raise TypeError("annotate: texts must be a list of record texts, not one string")
        conversations = [self.messages(t, task) for t in texts]
        model, decoding = self.fingerprint(), self.decoding()
        requests = [make_request(model, decoding, c) for c in conversations]
        keys = [request_key(r) for r in requests]
        replies = self.cache.get_many(keys) if self.cache is not None else {}
        n_cached = sum(k in replies for k in keys)
        todo = {k: r for k, r in zip(keys, requests, strict=True) if k not in replies}
        replies.update(self._ask(todo))
        return self._frame(conversations, [replies[k] for k in keys], len(todo), n_cached)

    def annotate_split(self, dataset: Dataset, split: str, style: Style = "list") -> pd.DataFrame:
        """Annotate one split ("train", "val", "test") of a labkit.data Dataset."""
        from labkit.data import to_text

        records = dataset.features(split).to_dict(orient="records")
        texts = [to_text(r, dataset.schema, style=style) for r in records]  # type: ignore[arg-type]
        return self.annotate(texts, dataset.schema.task)

    def _ask(self, todo: dict[str, dict[str, Any]]) -> dict[str, Reply]:
        """Ask the uncached requests batch by batch, committing each batch to the cache."""
        items = list(todo.items())
        got: dict[str, Reply] = {}
        desc = f"annotate ({self.mode})"
        quiet = not self.progress or not items  # no empty bar for a run answered from the cache
        with tqdm(total=len(items), desc=desc, unit="prompt", disable=quiet) as bar:
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                answers = self._reply([request["messages"] for _, request in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"{type(self).__name__}: {len(answers)} replies for "
                                       f"{len(batch)} prompts")
                if self.cache is not None:
                    rows = [(k, r, a) for (k, r), a in zip(batch, answers, strict=True)]
                    self.cache.put_many(rows)
                got.update({k: a for (k, _), a in zip(batch, answers, strict=True)})
                bar.update(len(batch))
        return got

    def _parse(self, reply: Reply) -> tuple[str, Parsed]:
        """The raw answer as text, and its parsed value."""
        if self.mode == "token":
            p_yes, p_no = reply["p_yes"], reply["p_no"]
            raw = f"P(Yes)={p_yes:.4g} P(No)={p_no:.4g}"
            if p_yes + p_no <= 0:
                return raw, Parsed(math.nan, "no probability on any Yes/No answer token")
            return raw, Parsed(p_yes / (p_yes + p_no), "")
        text = reply["text"]
        return text, parse_yes_no(text) if self.mode == "hard" else parse_probability(text)

    def _frame(
        self, conversations: list[Messages], replies: list[Reply], n_sent: int, n_cached: int
    ) -> pd.DataFrame:
        rows = []
        for conversation, reply in zip(conversations, replies, strict=True):
            raw, parsed = self._parse(reply)
            row = {"prompt": conversation[-1]["content"], "raw": raw, "value": parsed.value,
                   "reason": parsed.reason}
            if self.mode == "token":
                row |= {"p_yes": reply["p_yes"], "p_no": reply["p_no"]}
            rows.append(row)
        columns = ["prompt", "raw", "value", "reason"]
        if self.mode == "token":
            columns += ["p_yes", "p_no"]
        frame = pd.DataFrame(rows, columns=columns)
        n_missing = int(frame["value"].isna().sum())
        frame.attrs.update(n_sent=n_sent, n_cached=n_cached, n_missing=n_missing)
        if n_missing:
            reasons = frame.loc[frame["value"].isna(), "reason"].value_counts().head(3).to_dict()
            warnings.warn(
                f"{type(self).__name__} ({self.mode}): {n_missing} of {len(frame)} answers are "
                f"missing (value NaN); most common reasons: {reasons}. See frame['reason'].",
                stacklevel=3,
            )
        return frame

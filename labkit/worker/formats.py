"""Instruction and preference data in alpaca, sharegpt or OpenAI-messages form, aligned to one `Sample`.

LlamaFactory's converters (data/converter.py) do the same: every format becomes a prompt (a list of
messages), a response, a system message. Where LlamaFactory logs "Invalid role tag" and skips the
row, the kit raises `FormatError` naming the file, the row, the field and the fix (or, when the
caller asks, counts the row as rejected: labkit.worker.loading).

    alpaca    {"instruction", "input", "output", "system", "history": [[user, assistant], ...]}
    sharegpt  {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}], "system"}
    openai    {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}

Preference data (`ranking: true`) adds "chosen" and "rejected" (strings for alpaca, one message each
for sharegpt / openai); KTO data (`kto_tag`) adds a true / false judgement of the response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from labkit.chat import Messages, prompt_messages
from labkit.data.loading import DataError
from labkit.worker.registry import DatasetAttr

Kind = Literal["sft", "preference", "feedback", "prompt"]


class FormatError(DataError):
    """A row of instruction or preference data does not fit its declared format."""


@dataclass(frozen=True)
class Sample:
    """One example, whatever file format it came from.

    The model reads `system`, the `history` of (user, assistant) turns and `prompt`, then answers:
    `response` for SFT, `chosen` over `rejected` for a reward model or DPO, `response` judged
    `desirable` or not for KTO; with none of them the sample is a prompt to generate from (PPO, GRPO).
    """

    prompt: str
    history: tuple[tuple[str, str], ...] = ()
    system: str | None = None
    response: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    desirable: bool | None = None
    source: str = ""  # "data/pairs.jsonl row 12": where the sample came from, named in errors

    @property
    def kind(self) -> Kind:
        if self.chosen is not None:
            return "preference"
        if self.desirable is not None:
            return "feedback"
        return "sft" if self.response is not None else "prompt"

    def messages(self) -> Messages:
        """What the model reads before it answers: system, history, the prompt."""
        return prompt_messages(self.system, self.history, self.prompt)


def _fail(where: str, field: str, problem: str, fix: str) -> FormatError:
    return FormatError(f"{where}, field {field!r}: {problem}; {fix}.")


def _text(row: Mapping[str, Any], column: str | None, where: str, *, required: bool = False) -> str | None:
    """A string column; missing or None is allowed unless `required`, anything else is an error."""
    value = row.get(column) if column else None
    if value is None or (value == "" and not required):
        if required:
            present = ", ".join(repr(k) for k in row) or "none"
            raise _fail(where, str(column), "missing", f"the row's fields are {present}; name the column "
                        "in dataset_info.json's \"columns\" if it is called otherwise")
        return None
    if not isinstance(value, str):
        raise _fail(where, str(column), f"expected text, got {type(value).__name__} {str(value)[:40]!r}",
                    "write the value as a JSON string")
    if required and not value.strip():
        raise _fail(where, str(column), "empty", "give it text or remove the row")
    return value


def _undeclared(row: Mapping[str, Any], attr: DatasetAttr, where: str, names: tuple[str, ...]) -> None:
    """A row field that means something (a system prompt, earlier turns) but that the registry does
    not name would be ignored, by LlamaFactory and so by the kit: say so instead."""
    for name in names:
        if getattr(attr.columns, name) is None and row.get(name) not in (None, "", []):
            fix = f"add \"columns\": {{\"{name}\": \"{name}\"}} to the entry of {attr.name!r}"
            raise _fail(where, name, "present, but dataset_info.json does not declare it, so it would be "
                        "ignored", fix)


def _label(row: Mapping[str, Any], column: str, where: str) -> bool:
    value = row.get(column)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # CSV spells booleans
        return value.strip().lower() == "true"
    raise _fail(where, column, f"expected true or false, got {value!r}", "mark each response desirable "
                "(true) or undesirable (false)")


def _judged(row: Mapping[str, Any], attr: DatasetAttr, where: str) -> bool | None:
    return _label(row, attr.columns.kto_tag, where) if attr.columns.kto_tag else None


# --- alpaca ----------------------------------------------------------------------------------------

def from_alpaca(row: Mapping[str, Any], attr: DatasetAttr, where: str) -> Sample:
    """instruction (+ "\\n" + input) is the prompt, output the response; history holds earlier turns."""
    c = attr.columns
    _undeclared(row, attr, where, ("system", "history"))
    instruction = _text(row, c.prompt, where, required=True)
    query = _text(row, c.query, where)
    prompt = "\n".join(part for part in (instruction, query) if part)
    history = _alpaca_history(row.get(c.history) if c.history else None, where, c.history or "history")
    system = _text(row, c.system, where)
    if attr.ranking:
        return Sample(prompt, history, system, chosen=_text(row, c.chosen, where, required=True),
                      rejected=_text(row, c.rejected, where, required=True), source=where)
    response = _text(row, c.response, where, required=attr.columns.kto_tag is not None)
    return Sample(prompt, history, system, response, desirable=_judged(row, attr, where), source=where)


def _alpaca_history(value: Any, where: str, column: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(where, column, f"expected a list of [user, assistant] pairs, got {type(value).__name__}",
                    "write it as [[\"question\", \"answer\"], ...]")
    turns = []
    for k, turn in enumerate(value):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise _fail(where, f"{column}[{k}]", f"expected a [user, assistant] pair of strings, got "
                        f"{turn!r:.80}", "write each turn as [\"question\", \"answer\"]")
        turns.append((turn[0], turn[1]))
    return tuple(turns)


# --- sharegpt and openai ---------------------------------------------------------------------------

def from_sharegpt(row: Mapping[str, Any], attr: DatasetAttr, where: str) -> Sample:
    """Messages alternate user (or observation) and assistant (or function call); a leading system
    message becomes the system prompt. SFT data ends with the assistant; preference data ends with
    the user and gives "chosen" and "rejected" as one message each."""
    c = attr.columns
    _undeclared(row, attr, where, ("system",))
    column = c.messages
    messages = row.get(column)
    if not isinstance(messages, list) or not messages:
        raise _fail(where, column, f"expected a non-empty list of messages, got {str(messages)[:60]!r}",
                    "name the messages column in dataset_info.json's \"columns\" (\"messages\": ...)")
    turns = [_message(m, f"{column}[{k}]", attr, where) for k, m in enumerate(messages)]
    system = _text(row, c.system, where)
    offset = int(turns[0][0] == "system")  # a leading system message is the system prompt
    if offset:
        system = turns.pop(0)[1]
    for k, (role, _) in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise _fail(where, f"{column}[{k + offset}]", f"role {role!r} where the conversation needs the "
                        f"{expected}'s turn", "alternate user and assistant messages, starting with the user")
    ends_with_user = len(turns) % 2 == 1
    if attr.ranking:
        if not ends_with_user:
            raise _fail(where, column, "preference data must end with the user's message",
                        "put the two answers in \"chosen\" and \"rejected\", not in the conversation")
        chosen, rejected = (_reply(row, name, attr, where) for name in (c.chosen, c.rejected))
        return Sample(turns[-1][1], _pairs(turns[:-1]), system, chosen=chosen, rejected=rejected,
                      source=where)
    if ends_with_user:
        if c.kto_tag:
            raise _fail(where, column, "KTO data must end with the assistant's message",
                        "give the judged response as the last message")
        return Sample(turns[-1][1], _pairs(turns[:-1]), system, source=where)  # a prompt only
    return Sample(turns[-2][1], _pairs(turns[:-2]), system, turns[-1][1], desirable=_judged(row, attr, where),
                  source=where)


def _message(message: Any, field: str, attr: DatasetAttr, where: str) -> tuple[str, str]:
    """(user | assistant | system, content) of one message, by the dataset's tags."""
    tags = attr.tags
    if not isinstance(message, Mapping):
        raise _fail(where, field, f"expected a message object, got {str(message)[:60]!r}",
                    f"write it as {{\"{tags.role_tag}\": ..., \"{tags.content_tag}\": ...}}")
    role = message.get(tags.role_tag)
    roles = {tags.user_tag: "user", tags.observation_tag: "user", tags.assistant_tag: "assistant",
             tags.function_tag: "assistant", tags.system_tag: "system"}
    if role not in roles:
        raise _fail(where, f"{field}.{tags.role_tag}", f"unknown role {role!r}",
                    f"this dataset's tags expect {tags.user_tag!r} (user), {tags.assistant_tag!r} "
                    f"(assistant) or {tags.system_tag!r} (system); fix the row or set \"tags\" in "
                    "dataset_info.json")
    content = message.get(tags.content_tag)
    if not isinstance(content, str):
        raise _fail(where, f"{field}.{tags.content_tag}", f"expected text, got {str(content)[:40]!r}",
                    f"give every message its text under {tags.content_tag!r} (or set \"content_tag\")")
    return roles[role], content


def _reply(row: Mapping[str, Any], column: str | None, attr: DatasetAttr, where: str) -> str:
    value = row.get(column) if column else None
    if isinstance(value, str):
        return value
    if value is None:
        raise _fail(where, str(column), "missing", "preference data needs a chosen and a rejected answer")
    role, content = _message(value, str(column), attr, where)
    if role != "assistant":
        raise _fail(where, str(column), f"the answer has role {role!r}", "give it the assistant's role")
    return content


def _pairs(turns: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((turns[i][1], turns[i + 1][1]) for i in range(0, len(turns), 2))


Converter = Callable[[Mapping[str, Any], DatasetAttr, str], Sample]
CONVERTERS: dict[str, Converter] = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_sharegpt}


def convert(row: Any, attr: DatasetAttr, where: str) -> Sample:
    """One row of a file, in the dataset's declared format, as a Sample (FormatError if it does not fit)."""
    if not isinstance(row, Mapping):
        raise FormatError(f"{where}: expected an object with named fields, got {type(row).__name__} "
                          f"{str(row)[:60]!r}; write one JSON object per row.")
    return CONVERTERS[attr.formatting](row, attr, where)

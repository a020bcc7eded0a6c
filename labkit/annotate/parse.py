"""Reading an LLM's answer: a verbalized probability or a Yes/No.

The rule of this module: an answer that does not state one clear value is *missing*, with the
reason, never guessed. A missing answer is `Parsed(nan, reason)`; a parsed one has reason "".

What counts as a probability (see docs/annotation.md for the table of examples):

- decimals "0.7", ".7", "0.70.", "1", "0", "1e-3"; a decimal comma "0,7" (but a comma followed by
  exactly three digits after a non-zero integer, "1,000", is a thousands separator);
- percentages "70%", "70 %", "70 percent" (divided by 100);
- fractions "7/10", "7 out of 10", "1 in 4" (numerator / denominator);
- a value outside [0, 1] ("1.2", "150%", "-0.1", "70") is missing ("out of range"), never rescaled:
  "70" is not read as 70 %;
- words ("likely", "seventy percent") are not numbers: missing ("no number").

When the answer holds several numbers, the one value is chosen only if it is unambiguous, in this
order: all numbers are equal ("0.7 (70%)"); exactly one value follows a cue word ("probability",
"likelihood", "chance", "risk", "estimate", "answer", "p") with at most a few linking words between
("Probability: .7", "I'd estimate it at 0.7"); the answer starts with a number ("0.7. Because
glucose is 150 ..."). Otherwise it is missing ("ambiguous"). A range ("0.3-0.5", "between 0.3 and
0.5") is missing too: it is two values, not one.
A number followed by "means" repeats the question's scale ("0.0 means very unlikely") and is not an
answer. Reasoning blocks "<think>...</think>" are removed first: only the final answer counts.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple


class Parsed(NamedTuple):
    """A parsed answer: value in [0, 1] (nan when missing) and why it is missing ("" when not)."""

    value: float
    reason: str


class _Number(NamedTuple):
    value: float  # nan for a range
    start: int
    end: int
    text: str

    @property
    def is_range(self) -> bool:
        return math.isnan(self.value)


# A plain number; the look-arounds keep it from starting or ending inside a word or another number.
_NUM = r"-?(?:\d+(?:[.,]\d+)?|[.,]\d+)(?:e[-+]?\d+)?"
_BOUNDARY_BEFORE = r"(?<![\w.,])"
_BOUNDARY_AFTER = r"(?![\w]|[.,]\d)"
_FRACTION = re.compile(
    _BOUNDARY_BEFORE + rf"(?P<a>{_NUM})\s*(?:/|\bout of\b|\bin\b)\s*(?P<b>{_NUM})" + _BOUNDARY_AFTER
)
_PERCENT = re.compile(_BOUNDARY_BEFORE + rf"(?P<a>{_NUM})\s*(?:%|\bper ?cent\b)")
_PLAIN = re.compile(_BOUNDARY_BEFORE + rf"(?P<a>{_NUM})" + _BOUNDARY_AFTER)
_RANGE = re.compile(
    rf"(?:\bbetween\s+{_NUM}\s*%?\s+and\s+{_NUM})"
    rf"|(?:{_BOUNDARY_BEFORE}{_NUM}\s*%?\s*(?:-|–|—|\bto\b)\s*{_NUM})"
)
# A cue word, then up to four short linking words or symbols, then the number.
_CUE = re.compile(
    r"\b(?:probability|likelihood|chance|risk|estimate|answer|p)\b"
    r"(?:\s*(?:[:=≈~]|is|of|at|be|would|about|around|roughly|approximately|it|i'd|say)\s*){0,4}\s*$"
)
# "0.0 means very unlikely": the question's scale repeated, not an answer.
_SCALE = re.compile(r"^\s*means\b")
_THINK = re.compile(r"<think>.*?</think>", flags=re.DOTALL)
# What may come before the answer's first word: spaces, quotes, markdown.
_LEAD = r"^[\s\"'`*_>#:(\[]*"
_NOTHING_BEFORE = re.compile(_LEAD + "$")


def _to_float(text: str) -> float:
    """'0.7', '.7', '0,7' -> float; '1,000' (thousands separator) -> 1000."""
    if "," in text:
        whole, frac = text.split(",")
        is_thousands = len(frac) == 3 and whole.lstrip("-") not in ("", "0")
        text = whole + frac if is_thousands else f"{whole}.{frac}"
    return float(text)


def _numbers(text: str) -> list[_Number]:
    """Every number and range in the answer.

    Ranges, fractions and percentages are found first, so that their parts are not counted again.
    """
    found: list[_Number] = []
    taken = [False] * len(text)

    def free(m: re.Match[str]) -> bool:
        return not any(taken[m.start() : m.end()])

    def take(m: re.Match[str], value: float) -> None:
        found.append(_Number(value, m.start(), m.end(), m.group(0)))
        taken[m.start() : m.end()] = [True] * (m.end() - m.start())

    for m in _RANGE.finditer(text):
        take(m, math.nan)
    for m in _FRACTION.finditer(text):
        den = _to_float(m["b"])
        if free(m):
            take(m, _to_float(m["a"]) / den if den != 0 else math.inf)
    for m in _PERCENT.finditer(text):
        if free(m):
            take(m, _to_float(m["a"]) / 100)
    for m in _PLAIN.finditer(text):
        if free(m):
            take(m, _to_float(m["a"]))
    return sorted(found, key=lambda n: n.start)


def _choose(text: str, numbers: list[_Number]) -> _Number | str:
    """The one number the answer states, or the reason there is not exactly one."""
    if len({n.text if n.is_range else n.value for n in numbers}) == 1:
        return numbers[0]
    cued = [n for n in numbers if _CUE.search(text[: n.start])]
    if len({n.text if n.is_range else n.value for n in cued}) == 1:
        return cued[0]
    if _NOTHING_BEFORE.match(text[: numbers[0].start]):
        return numbers[0]
    listed = ", ".join(n.text for n in numbers[:5])
    return f"ambiguous: several numbers ({listed})"


def strip_reasoning(text: str) -> str:
    """The answer without '<think>...</think>' blocks (reasoning models), stripped."""
    return _THINK.sub(" ", text).strip()


def parse_probability(answer: str | None) -> Parsed:
    """The probability an answer states, or nan with the reason it is missing."""
    text = strip_reasoning(answer or "").lower()
    if not text:
        return Parsed(math.nan, "empty answer")
    numbers = _numbers(text)
    if not numbers:
        return Parsed(math.nan, "no number in the answer")
    numbers = [n for n in numbers if not _SCALE.match(text[n.end :])]
    if not numbers:
        return Parsed(math.nan, "only the question's scale ('0.0 means ...'), no answer")
    chosen = _choose(text, numbers)
    if isinstance(chosen, str):
        return Parsed(math.nan, chosen)
    if chosen.is_range:
        return Parsed(math.nan, f"a range, not one value: {chosen.text!r}")
    if not 0.0 <= chosen.value <= 1.0:
        return Parsed(math.nan, f"out of range [0, 1]: {chosen.text!r}")
    return Parsed(chosen.value, "")


_YES_NO = re.compile(r"\b(yes|no)\b")
_FIRST_WORD = re.compile(_LEAD + r"(yes|no)\b")
_EITHER = re.compile(r"\b(?:yes\s*(?:or|/)\s*no|no\s*(?:or|/)\s*yes)\b")


def parse_yes_no(answer: str | None) -> Parsed:
    """1.0 for Yes, 0.0 for No, or nan with the reason.

    The answer's first word decides when it is Yes or No ("No, because ... yes"); otherwise the
    answer must contain only one of the two words ("The answer is yes."). Both or neither, or the
    question's "Yes or No" repeated: missing.
    """
    text = strip_reasoning(answer or "").lower()
    if not text:
        return Parsed(math.nan, "empty answer")
    words = _YES_NO.findall(text)
    if not words:
        return Parsed(math.nan, "neither Yes nor No in the answer")
    if _EITHER.search(text):
        return Parsed(math.nan, "ambiguous: 'yes or no' repeated from the question")
    first = _FIRST_WORD.match(text)
    if first is not None:
        return Parsed(1.0 if first.group(1) == "yes" else 0.0, "")
    if len(set(words)) == 2:
        return Parsed(math.nan, "ambiguous: both Yes and No in the answer")
    return Parsed(1.0 if words[0] == "yes" else 0.0, "")

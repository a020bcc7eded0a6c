"""Parsing LLM answers: a table of tricky strings, each with the value or the reason expected."""

from __future__ import annotations

import math

import pytest

from labkit.annotate.parse import parse_probability, parse_yes_no

# answer -> the probability it states, or the start of the reason it is missing (a str).
PROBABILITIES: list[tuple[str | None, float | str]] = [
    ("0.7", 0.7),
    ("70%", 0.7),
    ("70 %", 0.7),
    ("70 percent", 0.7),
    ("Probability: .7", 0.7),
    ("I'd say 0.70.", 0.7),
    ("0,7", 0.7),  # decimal comma
    ("7/10", 0.7),
    ("7 out of 10", 0.7),
    ("1 in 4", 0.25),
    ("**0.6**", 0.6),  # markdown
    ("p = 0.35", 0.35),
    ("1", 1.0),
    ("0", 0.0),
    ("1e-3", 0.001),
    ("0.5%", 0.005),  # a small percentage, not a half
    ("0.7 (70%)", 0.7),  # two forms of one value
    ("On a scale from 0 to 1, the probability is 0.7.", 0.7),  # the cue beats the scale
    ("Based on glucose 148 mg/dL and BMI 33.6, probability: 0.75", 0.75),
    ("0.65. Glucose of 150 raises it.", 0.65),  # the answer first, then the reasons
    ("I estimate it at about 0.4", 0.4),
    ("<think>maybe 0.2, or 0.9?</think>\nAnswer: 0.85", 0.85),  # only the final answer counts
    ("0.0 means very unlikely, 1.0 means very likely. 0.3", 0.3),
    ("", "empty answer"),
    (None, "empty answer"),
    ("   ", "empty answer"),
    ("very likely", "no number"),
    ("seventy percent", "no number"),  # number words are not read
    ("1.2", "out of range"),
    ("150%", "out of range"),
    ("-0.1", "out of range"),
    ("70", "out of range"),  # not silently read as 70 %
    ("1,000", "out of range"),  # a thousands separator, not 1.0
    ("3/0", "out of range"),
    ("0.3-0.5", "a range"),
    ("between 0.3 and 0.5", "a range"),
    ("0.25 to 0.35", "a range"),
    ("Glucose 148, BMI 33.6", "ambiguous"),
    ("0.0 means very unlikely, 1.0 means very likely.", "only the question's scale"),
]

YES_NO: list[tuple[str | None, float | str]] = [
    ("Yes", 1.0),
    ("No.", 0.0),
    ("  NO", 0.0),
    ("**Yes**", 1.0),
    ("The answer is yes.", 1.0),
    ("No, because ... although yes, glucose is high", 0.0),  # the first word decides
    ("<think>no</think>Yes", 1.0),
    ("Yes or No?", "ambiguous: 'yes or no'"),
    ("yes/no", "ambiguous: 'yes or no'"),
    ("Probably yes, but maybe no", "ambiguous: both"),
    ("Not likely", "neither"),
    ("nobody knows", "neither"),  # "no" inside a word does not count
    ("", "empty answer"),
]


def _check(parsed: tuple[float, str], expected: float | str) -> None:
    value, reason = parsed
    if isinstance(expected, str):
        assert math.isnan(value) and reason.startswith(expected), (value, reason)
    else:
        assert value == pytest.approx(expected) and reason == "", (value, reason)


@pytest.mark.parametrize(("answer", "expected"), PROBABILITIES)
def test_parse_probability(answer: str | None, expected: float | str) -> None:
    _check(parse_probability(answer), expected)


@pytest.mark.parametrize(("answer", "expected"), YES_NO)
def test_parse_yes_no(answer: str | None, expected: float | str) -> None:
    _check(parse_yes_no(answer), expected)


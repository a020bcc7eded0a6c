"""LLM annotators: a local transformers model or any OpenAI-compatible server, three modes
(hard Yes/No, verbalized probability, token probability P(Yes)), robust answer parsing and a
persistent cache. See docs/annotation.md.

    from labkit.annotate import LocalAnnotator
    annotator = LocalAnnotator(model, tokenizer, mode="token", cache="runs/answers.sqlite")
    frame = annotator.annotate(texts, task)        # columns prompt, raw, value, reason
"""

from labkit.annotate.base import MODES, Annotator, Mode
from labkit.annotate.cache import AnswerCache
from labkit.annotate.local import LocalAnnotator, answer_tokens, model_fingerprint
from labkit.annotate.openai_client import OpenAIAnnotator
from labkit.annotate.parse import Parsed, parse_probability, parse_yes_no

__all__ = [
    "MODES", "Annotator", "AnswerCache", "LocalAnnotator", "Mode", "OpenAIAnnotator", "Parsed",
    "answer_tokens", "model_fingerprint", "parse_probability", "parse_yes_no",
]

"""Any OpenAI-compatible server as annotator: OpenAI itself, vLLM, llama.cpp, Ollama, `labkit serve`.

    export OPENAI_API_KEY=...                       # read from the environment, never printed
    annotator = OpenAIAnnotator("gpt-4o-mini", mode="token", cache="runs/answers.sqlite")
    local = OpenAIAnnotator("pocket-llm", base_url="http://127.0.0.1:8000/v1", api_key_env=None)

Requests go one at a time through the official `openai` client (chat completions); each answer is
committed to the cache before the next request, so an interruption loses nothing. Rate limits
(429), server errors (5xx), timeouts and dropped connections are retried with exponential
backoff, honouring the server's Retry-After header; a 429 that says the quota is used up is not
retried, because waiting will not help.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from tqdm.auto import tqdm

from labkit.annotate.base import Annotator, Messages, Mode, PromptFn, Reply
from labkit.annotate.cache import AnswerCache

DEFAULT_MAX_TOKENS: dict[str, int] = {"hard": 5, "verbalized": 16, "token": 1}
# Errors worth waiting for; anything else (bad request, wrong key, unknown model) fails at once.
RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)
# A key for servers that check none (labkit serve, a local vLLM): the client insists on one.
NO_KEY = "no-key"


def api_key(env: str | None) -> str:
    """The API key from environment variable `env` (None: a server that needs no key)."""
    if env is None:
        return NO_KEY
    key = os.environ.get(env, "")
    if not key:
        raise ValueError(
            f"the environment variable {env} is not set: set it to your API key (the kit never "
            "prints or stores it), or pass api_key_env=None for a server that needs no key."
        )
    return key


def public_url(url: str) -> str:
    """The URL without user, password, query or fragment: safe to store in a cache or print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def retry_wait(error: Exception, attempt: int, max_wait: float) -> float:
    """Seconds to wait before retry number `attempt` (0-based): the server's Retry-After when it
    gives one, else 1, 2, 4, ... seconds; never more than max_wait."""
    response = getattr(error, "response", None)
    headers = response.headers if response is not None else {}
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(max_wait, max(0.0, float(headers[header]) * scale))
        except (KeyError, ValueError):
            continue
    return min(max_wait, 2.0**attempt)


def yes_no_mass(top: list[Any]) -> dict[str, float]:
    """P(Yes) and P(No) masses from the top log-probabilities of the first answer token: every
    token that reads "yes" / "no" once stripped and lower-cased ("Yes", " yes", "YES")."""
    masses = {"p_yes": 0.0, "p_no": 0.0}
    for candidate in top:
        word = candidate.token.strip().lower()
        if word in ("yes", "no"):
            masses[f"p_{word}"] += math.exp(candidate.logprob)
    return masses


class OpenAIAnnotator(Annotator):
    """Annotate through an OpenAI-compatible chat completions endpoint.

    model: the model name the server knows. base_url: e.g. "http://127.0.0.1:8000/v1" (None: the
    openai client's default, OpenAI itself). api_key_env: the environment variable that holds
    the key (None: no key). client: a ready openai.OpenAI client instead (base_url and
    api_key_env are then ignored). max_tokens: tokens to generate (DEFAULT_MAX_TOKENS per mode).
    top_logprobs: how many alternatives the server returns for the answer token in token mode
    (OpenAI allows up to 20); P(Yes) and P(No) are summed over them. timeout: seconds per
    request. max_retries, max_wait: retries of a failed request and the longest wait between two.
    """

    def __init__(
        self,
        model: str,
        mode: Mode = "verbalized",
        *,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        client: openai.OpenAI | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_logprobs: int = 20,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_wait: float = 60.0,
        cache: AnswerCache | str | Path | None = None,
        prompt: PromptFn | None = None,
        system: str | None = None,
        progress: bool = True,
    ) -> None:
        # batch_size 1: each answer is cached as soon as it arrives.
        super().__init__(mode, cache=cache, batch_size=1, prompt=prompt, system=system,
                         progress=progress)
        # The client's own retries are off: ours below log what happens and honour max_wait.
        self.client = client or openai.OpenAI(
            base_url=base_url, api_key=api_key(api_key_env), timeout=timeout, max_retries=0
        )
        self.model = model
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS[mode]
        self.temperature = temperature
        self.top_logprobs = top_logprobs
        self.max_retries = max_retries
        self.max_wait = max_wait

    @property
    def base_url(self) -> str:
        return public_url(str(self.client.base_url))

    def __repr__(self) -> str:
        return f"OpenAIAnnotator({self.model!r}, mode={self.mode!r}, base_url={self.base_url!r})"

    def fingerprint(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    def decoding(self) -> dict[str, Any]:
        if self.mode == "token":
            return {"mode": "token", "top_logprobs": self.top_logprobs}
        return {"mode": self.mode, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _reply(self, conversations: list[Messages]) -> list[Reply]:
        return [self._ask_one(messages) for messages in conversations]

    def _ask_one(self, messages: Messages) -> Reply:
        params: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.mode == "token":
            params |= {"max_tokens": 1, "temperature": 0.0, "logprobs": True,
                       "top_logprobs": self.top_logprobs}
        else:
            params |= {"max_tokens": self.max_tokens, "temperature": self.temperature}
        choice = self._create(params).choices[0]
        if self.mode != "token":
            return {"text": (choice.message.content or "").strip()}
        content = choice.logprobs.content if choice.logprobs is not None else None
        if not content:
            raise RuntimeError(
                f"{self.base_url} returned no logprobs for {self.model!r}: this server does not "
                "support mode='token'; use mode='verbalized' or mode='hard'."
            )
        return yes_no_mass(content[0].top_logprobs or [content[0]])

    def _create(self, params: dict[str, Any]) -> Any:
        """One chat completion, retried on rate limits, server errors and timeouts."""
        for attempt in range(self.max_retries + 1):
            try:
                return self.client.chat.completions.create(**params)
            except RETRYABLE as error:
                if getattr(error, "code", None) == "insufficient_quota":
                    raise RuntimeError(
                        f"{self.base_url}: the account's quota is used up (429 insufficient_quota); "
                        "waiting will not help."
                    ) from error
                if attempt == self.max_retries:
                    raise RuntimeError(
                        f"{self.base_url}: {type(error).__name__} after {attempt + 1} attempts; "
                        "try later, or raise max_retries / timeout."
                    ) from error
                wait = retry_wait(error, attempt, self.max_wait)
                tqdm.write(f"{self.base_url}: {type(error).__name__}; retry {attempt + 1} of "
                           f"{self.max_retries} in {wait:.1f} s")
                time.sleep(wait)
        raise AssertionError("unreachable")

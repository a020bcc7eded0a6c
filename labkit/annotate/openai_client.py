"""Any OpenAI-compatible server as annotator: OpenAI itself, vLLM, llama.cpp, Ollama, `labkit serve`.

    export OPENAI_API_KEY=...                       # read from the environment, never printed
    annotator = OpenAIAnnotator("gpt-4o-mini", mode="token", cache="runs/answers.sqlite")
    local = OpenAIAnnotator("pocket-llm", base_url="http://127.0.0.1:8000/v1", api_key_env=None)

Requests go through the official `openai` client (chat completions), `in_flight` of them at once
(one at a time by default: a hosted API's rate limit is per account; a vLLM server batches what it
receives, so 8 or more keep it busy). Each answer is committed to the cache as it arrives, so an
interruption loses only the requests still in flight, and a rerun asks only what is missing. Rate limits
(429), server errors (5xx), timeouts and dropped connections are retried with exponential
backoff, honouring the server's Retry-After header; a 429 that says the quota is used up is not
retried, because waiting will not help.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Retry:
    """How hard to try one request: `timeout` seconds per attempt, up to `attempts` retries of a
    rate limit, server error, timeout or dropped connection, waiting at most `max_wait` seconds
    between two (see `retry_wait`)."""

    timeout: float = 60.0
    attempts: int = 5
    max_wait: float = 60.0


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
    (OpenAI allows up to 20); P(Yes) and P(No) are summed over them. retry: the timeout and
    the retries of one request (`Retry`).
    in_flight: requests sent at once (threads; each is retried on its own); answers are cached
    and reported in the records' order whatever order they arrive in.
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
        retry: Retry = Retry(),
        in_flight: int = 1,
        cache: AnswerCache | str | Path | None = None,
        prompt: PromptFn | None = None,
        system: str | None = None,
        progress: bool = True,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        # batch_size 1: each answer is cached as soon as it arrives.
        super().__init__(mode, cache=cache, batch_size=1, prompt=prompt, system=system,
                         progress=progress)
        self.in_flight = in_flight
        # The client's own retries are off: ours below log what happens and honour max_wait.
        self.client = client or openai.OpenAI(
            base_url=base_url, api_key=api_key(api_key_env), timeout=retry.timeout, max_retries=0
        )
        self.model = model
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS[mode]
        self.temperature = temperature
        self.top_logprobs = top_logprobs
        self.retry = retry

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

    def _ask(self, todo: dict[str, dict[str, Any]]) -> dict[str, Reply]:
        """Keep up to `in_flight` requests open; cache each answer as it arrives. On an error the
        requests not yet sent are dropped, those in flight finish (their answers are kept), and
        the error is raised: a rerun asks only what is still missing."""
        if self.in_flight == 1:
            return super()._ask(todo)
        waiting = iter(todo.items())
        got: dict[str, Reply] = {}
        pending: dict[Future[Reply], tuple[str, dict[str, Any]]] = {}
        failures: list[BaseException] = []
        quiet = not self.progress or not todo
        with (tqdm(total=len(todo), desc=f"annotate ({self.mode})", unit="prompt", disable=quiet) as bar,
              ThreadPoolExecutor(max_workers=self.in_flight) as pool):
            while True:
                for key, request in waiting if not failures else ():
                    pending[pool.submit(self._ask_one, request["messages"])] = (key, request)
                    if len(pending) >= self.in_flight:
                        break
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    self._keep(future, *pending.pop(future), got, failures)
                    bar.update(future.exception() is None)
        if failures:
            raise failures[0]
        return got

    def _keep(self, future: Future[Reply], key: str, request: dict[str, Any], got: dict[str, Reply],
              failures: list[BaseException]) -> None:
        """One finished request: its answer into `got` and the cache, or its error into `failures`."""
        error = future.exception()
        if error is not None:
            failures.append(error)
            return
        got[key] = future.result()
        if self.cache is not None:
            self.cache.put_many([(key, request, got[key])])

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
        for attempt in range(self.retry.attempts + 1):
            try:
                return self.client.chat.completions.create(**params)
            except RETRYABLE as error:
                if getattr(error, "code", None) == "insufficient_quota":
                    raise RuntimeError(
                        f"{self.base_url}: the account's quota is used up (429 insufficient_quota); "
                        "waiting will not help."
                    ) from error
                if attempt == self.retry.attempts:
                    raise RuntimeError(
                        f"{self.base_url}: {type(error).__name__} after {attempt + 1} attempts; "
                        "try later, or raise Retry's attempts / timeout."
                    ) from error
                seconds = retry_wait(error, attempt, self.retry.max_wait)
                tqdm.write(f"{self.base_url}: {type(error).__name__}; retry {attempt + 1} of "
                           f"{self.retry.attempts} in {seconds:.1f} s")
                time.sleep(seconds)
        raise AssertionError("unreachable")

"""`labkit serve`: a real HTTP server on 127.0.0.1, driven by the official openai client."""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import openai
import pytest
from tiny_models import TASK, TEXTS, tiny_chat_model  # tests/ is on sys.path (conftest.py)

from labkit.annotate import LocalAnnotator, OpenAIAnnotator
from labkit.serve import RunningServer, serve_in_thread


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_chat_model()


@pytest.fixture(scope="module")
def server(tiny: Any) -> Iterator[RunningServer]:
    with serve_in_thread(*tiny, name="tiny") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]


@pytest.mark.parametrize("mode", ["token", "hard", "verbalized"])
def test_annotating_through_the_server_equals_annotating_locally(
    mode: str, tiny: Any, server: RunningServer
) -> None:
    tokens = 1 if mode == "hard" else 3  # the rigged model would go on: "YesYesNo"
    remote = OpenAIAnnotator("tiny", mode, base_url=server.base_url, api_key_env=None,
                             max_tokens=tokens, progress=False)
    local = LocalAnnotator(*tiny, mode, max_new_tokens=tokens, progress=False)
    # The rigged model answers words, not numbers: every verbalized answer is missing, both ways.
    expect = pytest.warns(UserWarning, match="missing") if mode == "verbalized" else nullcontext()
    with expect:
        over_http, in_memory = remote.annotate(TEXTS, TASK), local.annotate(TEXTS, TASK)
    if mode == "token":  # the server's top-20 logprobs hold both answer tokens of the rigged model
        np.testing.assert_allclose(over_http["p_yes"], in_memory["p_yes"], rtol=1e-4)
        np.testing.assert_allclose(over_http["value"], in_memory["value"], rtol=1e-4)
    else:
        assert over_http["raw"].tolist() == in_memory["raw"].tolist()
        assert over_http["value"].equals(in_memory["value"])
        assert over_http["reason"].tolist() == in_memory["reason"].tolist()


def test_logprobs_are_the_models_and_consistent_with_the_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Is it likely? Answer Yes or No."}],
        max_tokens=2, temperature=0, logprobs=True, top_logprobs=5)
    choice = completion.choices[0]
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        top = token.top_logprobs
        assert len(top) == 5 and top[0].token == token.token  # greedy: the answer is the top one
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert sum(math.exp(t.logprob) for t in top) <= 1 + 1e-6
    assert choice.finish_reason == "length" and completion.usage.completion_tokens == 2


def test_sampling_with_a_seed_is_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        completion = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": TEXTS[0]}], max_tokens=8,
            temperature=1.5, seed=seed)
        return completion.choices[0].message.content or ""

    assert sample(3) == sample(3)
    assert len({sample(s) for s in range(6)}) > 1


def test_unsupported_requests_get_openai_errors(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.BadRequestError, match="one completion"):
        client.chat.completions.create(model="tiny", messages=messages, n=2)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="tiny", messages=messages, logprobs=True,
                                       top_logprobs=50)
    with pytest.raises(openai.BadRequestError, match="stop strings"):
        client.chat.completions.create(model="tiny", messages=messages, stop=["\n"])


@pytest.mark.slow
def test_labkit_serve_command_serves_a_saved_model(tiny: Any, tmp_path: Any) -> None:
    """`labkit serve --model DIR` in its own process, loaded through labkit.loader."""
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    with socket.socket() as probe:  # a free port for the child to listen on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "labkit", "serve", "--model", str(tmp_path / "tiny"),
               "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                               max_retries=0, timeout=5)
        deadline = time.monotonic() + 90
        while True:
            try:
                served = [m.id for m in client.models.list()]
                break
            except openai.APIConnectionError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "labkit serve did not start in 90 s"
                time.sleep(0.2)
        assert served == ["tiny"]  # the folder's name
        answer = OpenAIAnnotator("tiny", "hard", base_url=f"http://127.0.0.1:{port}/v1",
                                 api_key_env=None, max_tokens=1, progress=False)
        local = LocalAnnotator(model, tokenizer, "hard", max_new_tokens=1, progress=False)
        assert answer.annotate(TEXTS, TASK)["raw"].equals(local.annotate(TEXTS, TASK)["raw"])
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down cleanly
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert f"model 'tiny' at http://127.0.0.1:{port}/v1" in output

"""An OpenAI-compatible HTTP server over a local causal LM (LlamaFactory's API), `labkit serve`.

    labkit serve                                   # the pocket LLM on http://127.0.0.1:8000/v1
    labkit serve --model /path/to/model --name my-model --port 8001

Endpoints: GET /v1/models and POST /v1/chat/completions with temperature, top_p, max_tokens (or
max_completion_tokens), seed, logprobs and top_logprobs (up to 20). One completion per request
(n=1), no streaming, no stop strings: such requests get a 400 that says so. Reported logprobs are
those of the model itself (log-softmax of its logits), whatever the sampling temperature.
Any OpenAI client can talk to it, e.g. labkit.annotate.OpenAIAnnotator with api_key_env=None.

In a notebook or a test, `serve_in_thread(model, tokenizer)` runs the same server in a background
thread on a free port and stops it on leaving the `with` block.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from labkit.chat import CausalLM, generation_config, prompt_batch
from labkit.hardware import seeded

DEFAULT_MAX_TOKENS = 256


class ChatMessage(BaseModel):
    role: str
    # A string, or OpenAI's list of parts [{"type": "text", "text": ...}]; text parts only.
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that this server understands."""

    model_config = ConfigDict(extra="ignore")  # other fields (user, metadata, ...) are ignored

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    n: int | None = 1
    stream: bool | None = False
    stop: str | list[str] | None = None


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    """An error in OpenAI's format, which the openai client turns into the matching exception."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": None}}
    return JSONResponse(status_code=status, content=body)


def _token_entry(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


class ChatModel:
    """A local model and tokenizer answering chat completion requests, one at a time."""

    def __init__(self, model: CausalLM, tokenizer: Any, name: str,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_tokens = max_tokens
        self.created = int(time.time())
        self._lock = threading.Lock()  # one generate() at a time; requests come from a thread pool

    def complete(self, request: ChatRequest) -> dict[str, Any]:
        """The chat completion response for a request already checked by `check`."""
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        device = next(self.model.parameters()).device
        ids, mask, _ = prompt_batch(self.tokenizer, [messages], device)
        max_new = request.max_completion_tokens or request.max_tokens or self.max_tokens
        config = generation_config(self.model, self.tokenizer, max_new, request.temperature,
                                   request.top_p, logits=True)
        with self._lock, torch.inference_mode(), seeded(request.seed):
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        new = out.sequences[0, ids.shape[1] :].tolist()
        stopped = bool(new) and new[-1] in _as_list(config.eos_token_id)
        answer = new[:-1] if stopped else new  # the end token is not part of the answer
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant",
                        "content": self.tokenizer.decode(answer, skip_special_tokens=True)},
            "finish_reason": "stop" if stopped else "length",
            "logprobs": None,
        }
        if request.logprobs:
            choice["logprobs"] = {"content": self._logprobs(answer, out.logits,
                                                             request.top_logprobs or 0)}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [choice],
            "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                      "total_tokens": ids.shape[1] + len(new)},
        }

    def _logprobs(self, answer: list[int], logits: tuple[torch.Tensor, ...],
                  top: int) -> list[dict[str, Any]]:
        """OpenAI's logprobs.content: each generated token with its log-probability and the
        `top` most likely alternatives at that step."""
        content = []
        for token_id, step_logits in zip(answer, logits, strict=False):
            logprobs = torch.log_softmax(step_logits[0].float(), dim=-1)
            entry = _token_entry(self.tokenizer, token_id, float(logprobs[token_id]))
            best = torch.topk(logprobs, top) if top else None
            entry["top_logprobs"] = [] if best is None else [
                _token_entry(self.tokenizer, int(i), float(v))
                for v, i in zip(best.values, best.indices, strict=True)
            ]
            content.append(entry)
        return content

    def check(self, request: ChatRequest) -> JSONResponse | None:
        """A 4xx response for what this server does not do, or None."""
        if request.model != self.name:
            return _error(404, f"model {request.model!r} is not served here; "
                               f"this server serves {self.name!r}", "model")
        if request.n not in (None, 1):
            return _error(400, "labkit serve returns one completion per request (n=1)", "n")
        if request.stream:
            return _error(400, "labkit serve does not stream; send stream=false", "stream")
        if request.stop:
            return _error(400, "labkit serve does not support stop strings", "stop")
        return None


def _as_list(value: int | list[int] | None) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def create_app(model: CausalLM, tokenizer: Any, name: str = "local",
               max_tokens: int = DEFAULT_MAX_TOKENS) -> FastAPI:
    """The FastAPI app serving `model` under the model id `name`."""
    chat = ChatModel(model, tokenizer, name, max_tokens)
    app = FastAPI(title="labkit serve", description=f"OpenAI-compatible API over {name}")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return _error(400, f"invalid request: {where}: {first.get('msg', error)}", where)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {"id": chat.name, "object": "model", "created": chat.created, "owned_by": "labkit"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=None)
    def completions(request: ChatRequest) -> dict[str, Any] | JSONResponse:
        return chat.check(request) or chat.complete(request)

    return app


class RunningServer:
    """A server running in a background thread; `with serve_in_thread(...) as server:`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 30.0) -> None:
        import uvicorn  # imported here: only the serving paths need it

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # port 0: the system picks a free one
        self.host, self.port = host, sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True, name=f"labkit-serve-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"labkit serve did not start on {host}:{self.port}")
            time.sleep(0.02)

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client, e.g. http://127.0.0.1:54321/v1."""
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(model: CausalLM, tokenizer: Any, name: str = "local",
                    host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve a model from a background thread (port 0: a free port); see `RunningServer`."""
    return RunningServer(create_app(model, tokenizer, name), host, port)

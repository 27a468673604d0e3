"""The OpenAI wire format the server and the router share: request bodies and their checks, errors
in OpenAI's shape, feedback, server-sent events, and the ASGI guard around both apps.

A body is refused with 400 before anything reads it when it is not a JSON object, carries `NaN`,
`Infinity` or a number that overflows a float, nests deeper than `MAX_DEPTH`, or holds a string
that is not valid UTF-8 text (a lone surrogate such as `"\\ud800"`); the error names the field.
Parameters rlhfops does not implement (`top_p` other than 1, penalties, `logit_bias`, `suffix`,
tools, a non-text `response_format`) are refused with a 400 naming the parameter rather than
silently dropped.

Feedback scores live on the scale the online gate's `margin` and `min_improvement` are written on:
`FEEDBACK_RANGE` = [0, 1], thumbs down 0 and up 1.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhfops.chat import prompt_of
from rlhfops.serving.store import FeedbackExists, InteractionStore

log = logging.getLogger("rlhfops.serving")

MAX_DEPTH = 32  # JSON nesting a request may have (a chat request needs 5)
FEEDBACK_RANGE = (0.0, 1.0)
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


class APIError(Exception):
    """A request answered with `status` and an OpenAI error body naming `param` when one is at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.kind, param=self.param, code=self.code,
                              retry_after=self.retry_after)  # fmt: skip


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}} (+ Retry-After)."""
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: Any) -> None:
    """APIError and Starlette's own errors (404 for an unknown path, 405) in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)


def busy(message: str, retry_after: int, status: int = 429) -> APIError:
    """429 (a queue is full) or 503 (a backend is unavailable), with Retry-After in seconds."""
    kind = "rate_limit_error" if status == 429 else "server_error"
    return APIError(status, message, kind, code="overloaded", retry_after=max(1, retry_after))


# ---- reading a body -------------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise APIError(400, f"request body contains {name}; numbers must be finite")


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise APIError(400, f"request body contains the number {text[:40]}, which overflows a float")
    return x


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object of finite numbers and valid text, or a 4xx APIError."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    raw = await request.body()
    if len(raw) > max_bytes:
        raise APIError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise APIError(400, f"request body nests deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise APIError(400, "request body is not UTF-8") from None
    except ValueError:  # JSONDecodeError, or an integer literal of more than 4300 digits
        raise APIError(400, "request body is not valid JSON") from None
    check_tree(data)
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


def check_tree(data: Any) -> None:
    """400 when `data` nests deeper than MAX_DEPTH or holds a key or string that is not valid
    UTF-8 text; walked without recursion, so any depth json.loads accepted is safe."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise APIError(400, f"request body nests deeper than {MAX_DEPTH} levels", param=where or None)
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_text(k, where or "body")
                stack.append((v, f"{where}.{k}" if where else k, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{where}.{i}", depth + 1) for i, v in enumerate(value))


def _check_text(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, f"'{where}' is not valid UTF-8 text (it has a lone surrogate)", param=where) from None


def parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """`data` as `model`, or a 400 naming the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise APIError(400, f"'{where}': {err['msg']}", param=where) from None


def check_bearer(request: Request, token: str | None) -> None:
    if token and request.headers.get("authorization") != f"Bearer {token}":
        raise APIError(401, "missing or wrong bearer token (Authorization: Bearer <key>)", "authentication_error")


async def disconnected(request: Request) -> None:
    """Returns when the client closes the connection (call it once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---- request bodies -------------------------------------------------------------------------------


class GenerationRequest(BaseModel):
    """What /v1/completions and /v1/chat/completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_k: int = Field(0, ge=0)
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    user: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    # refused unless left at OpenAI's default
    top_p: float = Field(1.0, ge=0, le=1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @model_validator(mode="after")
    def _supported(self) -> GenerationRequest:
        refused = {
            "top_p": self.top_p != 1.0,
            "presence_penalty": self.presence_penalty != 0,
            "frequency_penalty": self.frequency_penalty != 0,
            "logit_bias": bool(self.logit_bias),
        }
        refused.update(self._refused())
        for name, bad in refused.items():
            if bad:
                raise APIError(400, f"'{name}' is not supported by this server; leave it at its default", param=name)
        if self.stop is not None:
            stops = [self.stop] if isinstance(self.stop, str) else self.stop
            if len(stops) > 4 or not all(stops):
                raise APIError(400, "'stop' takes at most 4 non-empty strings", param="stop")
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "'stream_options' needs stream=true", param="stream_options")
        return self

    def _refused(self) -> dict[str, bool]:
        return {}

    @property
    def stops(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def logprobs_k(self) -> int | None:
        """None: no logprobs; k: the chosen token's log-prob and the k likeliest."""
        return None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None

    def _refused(self) -> dict[str, bool]:
        return {"suffix": bool(self.suffix), "echo": self.echo and self.logprobs is not None}

    @property
    def logprobs_k(self) -> int | None:
        return self.logprobs


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def _refused(self) -> dict[str, bool]:
        fmt = (self.response_format or {}).get("type", "text")
        return {
            "tools": bool(self.tools),
            "tool_choice": self.tool_choice not in (None, "none"),
            "functions": bool(self.functions),
            "response_format": fmt != "text",
            "top_logprobs": self.top_logprobs is not None and not self.logprobs,
        }

    @property
    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _max_completion_tokens(self) -> ChatRequest:
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The prompt string of a chat request (`chat.prompt_of` of plain role / content messages):
    text parts joined, an assistant's `content: null` as empty text; what the interaction store
    keeps, and what `chat.render` turns into model text."""
    plain = []
    for i, m in enumerate(messages):
        if m.content is None:
            if m.role != "assistant":
                raise APIError(400, f"message {i} ({m.role}) has no content", param=f"messages.{i}.content")
            text = ""
        elif isinstance(m.content, str):
            text = m.content
        else:
            kinds = {p.type for p in m.content} - {"text"}
            if kinds:
                raise APIError(400, f"message {i} has a {sorted(kinds)[0]} part; this model reads text parts only",
                               param=f"messages.{i}.content")  # fmt: skip
            text = "".join(p.text or "" for p in m.content)
        plain.append({"role": m.role, "content": text})
    try:
        return prompt_of(plain)
    except ValueError as e:
        raise APIError(400, f"messages: {e}", param="messages") from None


# ---- feedback -------------------------------------------------------------------------------------


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    score: float | None = Field(None, strict=True)  # a number: not true, not "0.5"
    thumbs: Literal["up", "down"] | None = None


def feedback_score(body: FeedbackRequest) -> float:
    """The score a feedback request gives: `score` in FEEDBACK_RANGE, or thumbs up 1 / down 0."""
    if (body.score is None) == (body.thumbs is None):
        raise APIError(400, "feedback needs exactly one of 'score' (a number) or 'thumbs' ('up' or 'down')")
    if body.thumbs is not None:
        return 1.0 if body.thumbs == "up" else 0.0
    low, high = FEEDBACK_RANGE
    score = float(body.score)
    if not low <= score <= high:  # NaN fails too (and read_json refuses it before)
        raise APIError(400, f"'score' is {score}; feedback scores are in [{low:g}, {high:g}]", param="score")
    return score


def record_feedback(store: InteractionStore | None, body: FeedbackRequest) -> dict[str, Any]:
    """Store one feedback for a logged interaction: 404 when there is none, 409 when it has one."""
    if store is None:
        raise APIError(404, "this server keeps no interaction store; send feedback to the router")
    score = feedback_score(body)
    try:
        store.add_feedback(body.id, score)
    except KeyError:
        raise APIError(404, f"no interaction with id '{body.id}'", param="id") from None
    except FeedbackExists:
        raise APIError(409, f"interaction '{body.id}' already has feedback; one per interaction", param="id") from None
    return {"id": body.id, "score": score, "status": "recorded"}


# ---- server-sent events ---------------------------------------------------------------------------

DONE = "data: [DONE]\n\n"  # the event that ends every stream


def sse(data: dict[str, Any]) -> str:
    """One server-sent event carrying `data` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass
class Chunks:
    """The chunks of one streamed reply in OpenAI's shape (`chat.completion.chunk` with a `delta`,
    or `text_completion` with `text`). With `include_usage` every chunk carries `"usage": null`
    and a last chunk without choices carries the usage. `extra` (the `rlhfops` field: interaction
    ids, version) goes on the last chunk before `[DONE]`."""

    id: str
    created: int
    model: str
    chat: bool
    include_usage: bool

    def event(self, choices: list[dict[str, Any]], usage: Any = None, extra: Any = None) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "created": self.created, "model": self.model, "choices": choices}  # fmt: skip
        if self.include_usage:
            chunk["usage"] = usage
        if extra is not None:
            chunk["rlhfops"] = extra
        return sse(chunk)

    def role(self, index: int) -> str:
        """A chat choice's first chunk: the assistant role, no content yet."""
        choice = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None}  # fmt: skip
        return self.event([choice])

    def text(self, index: int, text: str, logprobs: Any = None) -> str:
        """A piece of a choice's text."""
        if self.chat:
            choice = {"index": index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": None}
        else:
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}
        return self.event([choice])

    def finish(self, index: int, reason: str, extra: Any = None) -> str:
        """A choice's last chunk: no text, its finish reason."""
        choice = {"index": index, "logprobs": None, "finish_reason": reason}
        choice.update({"delta": {}} if self.chat else {"text": ""})
        return self.event([choice], extra=extra)

    def usage(self, usage: dict[str, int], extra: Any = None) -> str:
        return self.event([], usage, extra)


def sse_events(reply: dict[str, Any], include_usage: bool) -> Iterator[str]:
    """A finished reply as a stream (for what is not streamed token by token: logprobs, best_of):
    per choice its text (chat: a role chunk first) then its finish reason; usage when asked;
    `[DONE]`."""
    chat = reply["object"] == "chat.completion"
    chunks = Chunks(reply["id"], reply["created"], reply["model"], chat, include_usage)
    extra = reply.get("rlhfops")
    last = len(reply["choices"]) - 1
    for c in reply["choices"]:
        i = c["index"]
        if chat:
            yield chunks.role(i)
        yield chunks.text(i, c["message"]["content"] if chat else c["text"], c.get("logprobs"))
        yield chunks.finish(i, c["finish_reason"], extra if i == last and not include_usage else None)
    if include_usage:
        yield chunks.usage(reply["usage"], extra)
    yield DONE


def streaming_response(events: Iterator[str] | AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream")


# ---- the guard around both apps -------------------------------------------------------------------


class Guard:
    """ASGI middleware: the docs (`DOCS_PATHS`) need the bearer token when one is set; an exception
    no handler took becomes a 500 in OpenAI's shape (one log line, no traceback to the client);
    `observe(route, status, seconds)` is called per request with the route template ('/v1/models',
    never a raw path; 'unmatched' for a path no route has)."""

    def __init__(self, app: Any, token: str | None, observe: Callable[[str, int, float], None] | None = None) -> None:
        self.app, self.token, self.observe = app, token, observe

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        state = {"status": 500, "started": False}

        async def tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            if self.token and scope["path"] in DOCS_PATHS:
                auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                if auth != f"Bearer {self.token}":
                    err = APIError(401, "the API docs need the bearer token (Authorization: Bearer <key>)",
                                   "authentication_error")  # fmt: skip
                    return await err.response()(scope, receive, tracked)
            await self.app(scope, receive, tracked)
        except Exception as e:  # a bug, not the client's: answer in OpenAI's shape, log one line
            log.error("%s %s failed: %s: %s", scope.get("method"), scope["path"], type(e).__name__, e)
            if not state["started"]:
                await error_response(500, "internal error; the request was not completed", "server_error")(
                    scope, receive, tracked
                )
        finally:
            if self.observe is not None:
                route = scope.get("route")
                self.observe(getattr(route, "path", "unmatched"), state["status"], time.perf_counter() - start)

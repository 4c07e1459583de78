"""The HTTP API over a run pool (FastAPI): predictions for task heads, OpenAI-compatible completions for causal-LM
runs, the models list, health, Prometheus metrics, and (with --allow-admin) loading and unloading runs.

Every error is a status code with one JSON line, {"error": "..."}: bad JSON 400, a missing or wrong API key 401,
admin endpoints while they are off 403, an unknown adapter 404, a body or text list over the limits 413, fields
that do not validate 422; anything unexpected 500 without a traceback."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import AdapterkitError
from ..heads import HEADS
from ..heads.lm import MAX_TOKENS
from ..inference.generate import generation_settings
from ..inference.pool import NAME, RunPool, UnknownRun
from .batcher import Batcher, Job
from .metrics import ServerMetrics


@dataclass(frozen=True)
class ServeSettings:
    """Limits and switches of one server (the `adapterkit serve` options)."""

    max_batch: int = 32  # texts in one forward batch
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_texts: int = 64  # texts (or prompts) in one request
    max_chars: int = 20_000  # characters in one text, prompt or message
    max_body: int = 4 << 20  # bytes of one request body
    api_key: Optional[str] = None
    allow_admin: bool = False


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields of their own (user, logprobs, ...)


class PredictRequest(_Request):
    model_config = ConfigDict(extra="forbid")
    adapter: str
    texts: list[str] = Field(min_length=1)


class CompletionRequest(_Request):
    model: str
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(None, gt=0, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0)
    stream: bool = False
    n: int = 1


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Request):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, gt=0, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0)
    stream: bool = False
    n: int = 1


class LoadRequest(_Request):
    model_config = ConfigDict(extra="forbid")
    path: str
    name: Optional[str] = None


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


@dataclass
class Api:
    """What every endpoint reads: the pool, its batcher, the limits and the metrics."""

    pool: RunPool
    settings: ServeSettings
    batcher: Batcher
    metrics: ServerMetrics

    async def body(self, request: Request, model: type[BaseModel]) -> Any:
        """The request's JSON body validated as `model`: 413 over the size limit, 400 not a JSON object, 422 invalid."""
        limit = self.settings.max_body
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body over {limit} bytes")
        raw = await request.body()
        if len(raw) > limit:
            raise HTTPError(413, f"request body over {limit} bytes")
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise HTTPError(400, f"the body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise HTTPError(422, _one_line(e)) from None

    def check_texts(self, texts: list[str], what: str) -> None:
        if len(texts) > self.settings.max_texts:
            raise HTTPError(413, f"{what}: {len(texts)} items; at most {self.settings.max_texts} per request")
        for i, t in enumerate(texts):
            if len(t) > self.settings.max_chars:
                raise HTTPError(422, f"{what}[{i}]: {len(t)} characters; at most {self.settings.max_chars}")

    def run_of(self, request: Request, name: str, generates: bool):
        """The loaded run `name` (404 if none), of a head that predicts or generates as the endpoint needs (400)."""
        pool = self.pool
        if name not in pool.runs:
            raise HTTPError(404, f"no adapter named {name!r} (loaded: {', '.join(pool.names()) or 'none'})")
        head = HEADS[pool.runs[name].recipe.task.type]
        if generates and not head.generates:
            raise HTTPError(400, f"{name!r} is a {head.name} run: it has no completions; use /v1/predict")
        if not generates and head.predict is None:
            raise HTTPError(400, f"{name!r} is a {head.name} run: it has no predictions; use /v1/completions")
        request.state.adapter = name  # the metrics label, once the name is known (none per unknown name)
        return pool.runs[name]

    async def submit(self, job: Job):
        return await asyncio.wrap_future(self.batcher.submit(job))

    def admin(self) -> None:
        if not self.settings.allow_admin:
            raise HTTPError(403, "admin endpoints are off; start the server with --allow-admin to load and unload runs")


def create_app(pool: RunPool, settings: ServeSettings = ServeSettings()) -> FastAPI:
    metrics = ServerMetrics(pool)
    api = Api(
        pool, settings, Batcher(pool, settings.max_batch, settings.max_wait_ms / 1000, metrics.batch_stats()), metrics
    )
    app = FastAPI(title="adapterkit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.pool = api.batcher, pool
    _errors_and_metrics(app, api)
    _info_routes(app, api)
    _task_routes(app, api)
    _admin_routes(app, api)
    return app


def _errors_and_metrics(app: FastAPI, api: Api) -> None:
    @app.exception_handler(HTTPError)
    async def http_error(request: Request, e: HTTPError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        return JSONResponse({"error": f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"}, status_code=422)

    @app.exception_handler(AdapterkitError)
    async def input_error(request: Request, e: AdapterkitError):  # a run that cannot load, a prompt it refuses
        status = 404 if isinstance(e, UnknownRun) else 400  # unloaded while the request waited
        return JSONResponse({"error": str(e).splitlines()[0]}, status_code=status)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"no endpoint {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc):
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started, key = time.perf_counter(), api.settings.api_key
        if key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return JSONResponse({"error": "missing or wrong API key (Authorization: Bearer KEY)"}, status_code=401)
        try:
            response = await call_next(request)
        except Exception:  # never a traceback to the client; the server's log has it
            logging.getLogger("uvicorn.error").exception("%s %s failed", request.method, request.url.path)
            response = JSONResponse({"error": "internal error; the server's log has the details"}, status_code=500)
        route = getattr(request.scope.get("route"), "path", "other")
        adapter = getattr(request.state, "adapter", "")
        api.metrics.request(route, adapter, response.status_code, time.perf_counter() - started)
        return response


def _info_routes(app: FastAPI, api: Api) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", "adapters": len(api.pool.runs)}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(api.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        runs = api.pool.runs
        data = [
            {"id": n, "object": "model", "owned_by": "adapterkit", "task": r.recipe.task.type} for n, r in runs.items()
        ]
        return {"object": "list", "data": data}


def _task_routes(app: FastAPI, api: Api) -> None:
    @app.post("/v1/predict")
    async def predict(request: Request):
        req = await api.body(request, PredictRequest)
        api.run_of(request, req.adapter, generates=False)
        api.check_texts(req.texts, "texts")
        rows = await api.submit(Job("predict", req.adapter, list(req.texts)))
        return {"adapter": req.adapter, "predictions": rows}

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await api.body(request, CompletionRequest)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        api.check_texts(prompts, "prompt")
        return await _complete(api, request, req, prompts, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await api.body(request, ChatRequest)
        messages = [m.model_dump() for m in req.messages]
        api.check_texts([m["content"] for m in messages], "messages")
        return await _complete(api, request, req, [messages], chat=True)


async def _complete(api: Api, request: Request, req, items: list, chat: bool) -> dict:
    """An OpenAI completion (or chat completion) object for the prompts (or one conversation)."""
    if req.stream:
        raise HTTPError(400, "stream: streamed responses are not supported; send stream: false")
    if req.n != 1:
        raise HTTPError(400, "n: one choice per prompt is supported")
    run = api.run_of(request, req.model, generates=True)
    gen = generation_settings(run, req.max_tokens, req.temperature)
    rows = await api.submit(Job("generate", req.model, items, settings=gen))
    used = [len(run.tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in rows]
    choices = [
        {
            "index": i,
            **({"message": {"role": "assistant", "content": r["text"]}} if chat else {"text": r["text"]}),
            "finish_reason": "length" if n >= gen.max_new_tokens else "stop",
        }
        for i, (r, n) in enumerate(zip(rows, used))
    ]
    prompt_tokens = sum(r["prompt_tokens"] for r in rows)
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": sum(used),
            "total_tokens": prompt_tokens + sum(used),
        },
    }


def _admin_routes(app: FastAPI, api: Api) -> None:
    @app.post("/v1/adapters")
    async def load(request: Request):
        api.admin()
        req = await api.body(request, LoadRequest)
        if req.name is not None and not NAME.fullmatch(req.name):
            raise HTTPError(422, f"name: {req.name!r} is not a run name (letters, digits, '.', '_' or '-')")
        name = await api.submit(Job("call", action=lambda p: p.add(req.path, req.name)))
        return JSONResponse({"loaded": name, "adapters": api.pool.names()}, status_code=201)

    @app.delete("/v1/adapters/{name}")
    async def unload(name: str):
        api.admin()
        if name not in api.pool.runs:
            raise HTTPError(404, f"no adapter named {name!r} (loaded: {', '.join(api.pool.names()) or 'none'})")
        await api.submit(Job("call", action=lambda p: p.remove(name)))
        return {"unloaded": name, "adapters": api.pool.names()}

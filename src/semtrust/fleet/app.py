"""The verifier's HTTP service: JSON API, OpenAPI document, metrics, web pages.

Operators authenticate with a bearer token; agents sign each request with
their host's enrolled key (see :mod:`semtrust.fleet.auth`). Every error is a
JSON object ``{"error": "..."}`` with a 4xx status (5xx only when the database
is unavailable); bodies are bounded before they are read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from semtrust import __version__
from semtrust.errors import InputError
from semtrust.fleet import views
from semtrust.fleet.alerts import Alerter, MqttTarget
from semtrust.fleet.appraise import Appraiser
from semtrust.fleet.auth import operator_ok
from semtrust.fleet.db import open_engine, upgrade
from semtrust.fleet.keys import ParsedKeys
from semtrust.fleet.metrics import CONTENT_TYPE, Metrics
from semtrust.fleet.registry import FleetError, Registry, SignedRequest
from semtrust.strict import loads_strict

__all__ = ["CONFIG_ENV", "ServerConfig", "app_from_environment", "config_to_env", "create_app"]

log = logging.getLogger("semtrust.fleet")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class ServerConfig:
    db: str
    operator_token: str | None = None
    nonce_ttl: float = 300.0
    stale_after: float = 180.0
    max_body: int = 8 << 20
    mqtt: MqttTarget | None = None
    webhooks: list[str] = field(default_factory=list)
    batch: int = 64


#: Environment variable that hands the configuration to ``--workers`` processes.
CONFIG_ENV = "SEMTRUST_VERIFIER_CONFIG"


def config_to_env(cfg: ServerConfig) -> str:
    m = cfg.mqtt
    return json.dumps({**asdict(cfg), "mqtt": None if m is None else {
        "host": m.host, "port": m.port, "topic": m.topic, "username": m.username,
        "password": m.password}})


def app_from_environment() -> FastAPI:
    """The app of one of several worker processes (``verifier serve --workers N``)."""
    import os

    raw = json.loads(os.environ.pop(CONFIG_ENV))
    mqtt = raw.pop("mqtt")
    return create_app(ServerConfig(**raw, mqtt=MqttTarget(**mqtt) if mqtt else None))


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def bounded() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, bounded, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


# ------------------------------------------------------------------ request bodies
class EnrollRequest(BaseModel):
    name: str = Field(max_length=64)
    tma_key: str = Field(max_length=16384, description="PEM public key (Ed25519 or RSA)")
    tpm_ak: str | None = Field(default=None, max_length=16384,
                               description="TPM attestation key, PEM public key")


class WorkloadRequest(BaseModel):
    name: str = Field(max_length=64)
    signing_key: str = Field(max_length=16384, description="RSA PEM public key that must "
                                                           "sign every model of the workload")


class ModelUpload(BaseModel):
    model: str = Field(description="The signed model file's text")


#: A push body: the request, its list, an attestation (itself up to the attestation format's
#: depth), or the forensics map and its event records.
PUSH_MAX_DEPTH = 8


class PushRequest(BaseModel):
    nonce: str = Field(max_length=128)
    attestations: list[dict[str, Any]]
    forensics: dict[str, dict[str, Any]] = Field(default_factory=dict)


_PUSH_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": PushRequest.model_json_schema()}}}}
_SIGNED = ("Signed by the host: headers X-Semtrust-Host, X-Semtrust-Date, "
           "X-Semtrust-Signature.")


def create_app(cfg: ServerConfig) -> FastAPI:
    engine = open_engine(cfg.db)
    keys = ParsedKeys()
    registry = Registry(engine, nonce_ttl=cfg.nonce_ttl, keys=keys)
    metrics = Metrics(engine)
    alerter = Alerter(cfg.mqtt, cfg.webhooks)
    appraiser = Appraiser(engine, emit=alerter, observe=metrics.observe,
                          stale_after=cfg.stale_after, batch=cfg.batch, keys=keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade(engine)
        alerter.start()
        appraiser.start()
        yield
        appraiser.stop()
        alerter.stop()
        engine.dispose()

    app = FastAPI(title="semtrust verifier", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Appraises signed attestations pushed by semtrust agents.")
    app.state.engine = engine
    app.state.appraiser = appraiser
    app.state.alerter = alerter

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(FleetError)
    async def _fleet_error(request: Request, exc: FleetError) -> JSONResponse:
        if request.url.path == "/api/v1/attestations":
            metrics.refused.labels(str(exc.status)).inc()
        return error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(DBAPIError)
    async def _db_down(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database error: %s", str(exc).splitlines()[0])
        return JSONResponse({"error": "database unavailable; retry later"}, status_code=503,
                            headers={"Retry-After": "2"})

    # -- authentication --------------------------------------------------------------
    def operator(request: Request) -> None:
        if not cfg.operator_token:
            raise FleetError(403, "no operator token is configured on this verifier")
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else None
        if not operator_ok(cfg.operator_token, given):
            raise FleetError(401, "operator token missing or wrong")

    async def signed(request: Request) -> SignedRequest:
        body = await request.body()
        h = request.headers
        name, date, sig = (h.get("x-semtrust-host"), h.get("x-semtrust-date"),
                           h.get("x-semtrust-signature"))
        if not name or not date or not sig:
            raise FleetError(401, "unsigned request (X-Semtrust-Host, X-Semtrust-Date and "
                                  "X-Semtrust-Signature are required)")
        return SignedRequest(request.method, request.url.path, name, date, sig, body)

    # -- operator endpoints -------------------------------------------------------------
    @app.post("/api/v1/hosts", status_code=201, dependencies=[Depends(operator)],
              summary="Enroll a host's TMA key (and TPM AK)")
    def enroll(req: EnrollRequest) -> dict[str, Any]:
        return registry.enroll(req.name, req.tma_key, req.tpm_ak)

    @app.post("/api/v1/workloads", status_code=201, dependencies=[Depends(operator)],
              summary="Create a workload and pin its model-signing key")
    def add_workload(req: WorkloadRequest) -> dict[str, Any]:
        return registry.add_workload(req.name, req.signing_key)

    @app.post("/api/v1/workloads/{name}/models", status_code=201,
              dependencies=[Depends(operator)], summary="Upload a new signed model version")
    def upload(name: str, req: ModelUpload) -> dict[str, Any]:
        return registry.upload_model(name, req.model)

    # -- agent endpoints -------------------------------------------------------------------
    @app.post("/api/v1/nonce", summary="A fresh single-use nonce for this host",
              description=_SIGNED)
    async def nonce(request: Request) -> dict[str, Any]:
        # One worker thread and one database connection for the whole request.
        return await run_in_threadpool(registry.signed_nonce, await signed(request))

    def parse_push(body: bytes) -> tuple[str, list[dict[str, Any]],
                                          dict[str, dict[str, Any]]]:
        # Strictly: a duplicate key (a decoy before the real field) or deep nesting is
        # refused before any check reads the documents.
        try:
            raw = loads_strict(body, source="body", max_depth=PUSH_MAX_DEPTH,
                               max_bytes=cfg.max_body)
        except InputError as exc:
            detail = str(exc)
            if "not JSON" in detail or "not UTF-8" in detail:
                detail = "body is not JSON"
            raise FleetError(400, detail) from None
        try:
            req = PushRequest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise FleetError(422, f"{where}: {first['msg']}") from None
        return req.nonce, req.attestations, req.forensics

    @app.post("/api/v1/attestations", status_code=202, openapi_extra=_PUSH_SCHEMA,
              summary="Push attestations (all carrying one issued nonce)",
              description=_SIGNED + " All or nothing: a refused push stores nothing.")
    async def push(request: Request) -> dict[str, Any]:
        ids = await run_in_threadpool(registry.signed_push, await signed(request), parse_push)
        appraiser.wake.set()
        return {"accepted": len(ids), "ids": ids}

    # -- read endpoints ------------------------------------------------------------------
    @app.get("/api/v1/hosts", summary="Enrolled hosts")
    def get_hosts() -> list[dict[str, Any]]:
        return views.list_hosts(engine)

    @app.get("/api/v1/workloads", summary="Workloads and their model versions")
    def get_workloads() -> list[dict[str, Any]]:
        return views.list_workloads(engine)

    @app.get("/api/v1/domains", summary="Every domain with its status")
    def get_domains() -> list[dict[str, Any]]:
        return views.list_domains(engine)

    @app.get("/api/v1/domains/{host}/{name}", summary="One domain: history, forensic events")
    def get_domain(host: str, name: str) -> dict[str, Any]:
        d = views.domain_detail(engine, host, name)
        if d is None:
            raise FleetError(404, f"no domain {name!r} on host {host!r}")
        return d

    @app.get("/api/v1/replicas", summary="Replica groups and their odd ones out")
    def get_replicas() -> list[dict[str, Any]]:
        return views.replica_groups(engine)

    @app.get("/metrics", summary="Prometheus metrics")
    def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", summary="Liveness and database reachability")
    def health() -> JSONResponse:
        from sqlalchemy import text

        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError:
            return JSONResponse({"ok": False, "error": "database unavailable"},
                                status_code=503)
        return JSONResponse({"ok": True, "worker": appraiser.worker})

    from semtrust.fleet.web import add_pages

    add_pages(app, engine)
    app.add_middleware(BodyLimit, limit=cfg.max_body)
    return app

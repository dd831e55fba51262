"""The admin API: keys and usage, behind the admin key (the auth middleware).

GET    /admin/keys                 every key, never a secret
POST   /admin/keys                 {"name", "models"?, "rpm"?, "tpm"?, "max_concurrency"?,
                                    "expires"?} -> 201, the secret in "key", shown once
DELETE /admin/keys/{id}            revoke (at once on this replica)
POST   /admin/keys/{id}/rotate     a new secret for the same key
GET    /admin/usage?since=&days=&key=   per key, model and UTC day
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vllama.auth.keys import KeyRecord, Limits, parse_expires
from vllama.auth.service import AuthService
from vllama.auth.usage import utc_day
from vllama.errors import BadRequest, VllamaError
from vllama.server.body import parse_object, read_body
from vllama.server.gateway import gateway_of


def _auth(request: Request) -> AuthService:
    return gateway_of(request).auth


def _not_found(key_id: str) -> VllamaError:
    err = VllamaError(f"key '{key_id}' not found", status=404)
    err.openai_type = "not_found_error"
    return err


def _limit(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"{name} must be a positive integer", param=name)
    return value


def key_spec(body: dict[str, Any]) -> tuple[str, tuple[str, ...], Limits, float | None]:
    """Validate a create request: name, allowed models, limits, expiry."""
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise BadRequest("name is required (at most 200 characters)", param="name")
    models = body.get("models") or []
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise BadRequest("models must be a list of model names", param="models")
    limits = Limits(_limit(body, "rpm"), _limit(body, "tpm"), _limit(body, "max_concurrency"))
    expires = body.get("expires")
    if expires is not None and not isinstance(expires, str):
        raise BadRequest("expires must be a duration (30d) or a date", param="expires")
    try:
        expires_at = parse_expires(expires)
    except ValueError as exc:
        raise BadRequest(str(exc), param="expires") from exc
    return name.strip(), tuple(models), limits, expires_at


def _with_secret(record: KeyRecord, secret: str) -> dict[str, Any]:
    return {**record.public(), "key": secret}


async def list_keys(request: Request) -> Response:
    return JSONResponse({"keys": [k.public() for k in await _auth(request).keys()]})


async def create_key(request: Request) -> Response:
    raw = await read_body(request, gateway_of(request).settings.max_body_bytes)
    name, models, limits, expires_at = key_spec(parse_object(raw or b"{}"))
    record, secret = await _auth(request).create(
        name, models=models, limits=limits, expires_at=expires_at
    )
    return JSONResponse(_with_secret(record, secret), status_code=201)


async def revoke_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    record = await _auth(request).revoke(key_id)
    if record is None:
        raise _not_found(key_id)
    return JSONResponse(record.public())


async def rotate_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    rotated = await _auth(request).rotate(key_id)
    if rotated is None:
        raise _not_found(key_id)
    return JSONResponse(_with_secret(*rotated))


async def usage(request: Request) -> Response:
    auth = _auth(request)
    query = request.query_params
    since = query.get("since")
    if since is None and query.get("days", "").isdigit():
        since = utc_day(time.time() - 86400 * max(0, int(query["days"]) - 1))
    names = {k.id: k.name for k in await auth.keys()}
    rows = await auth.usage_rows(since=since, key_id=query.get("key"))
    return JSONResponse(
        {
            "usage": [
                {
                    "day": r.day,
                    "key_id": r.key_id,
                    "key_name": names.get(r.key_id, r.key_id),
                    "model": r.model,
                    "requests": r.requests,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                }
                for r in rows
            ]
        }
    )


routes = [
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/admin/usage", usage, methods=["GET"]),
]

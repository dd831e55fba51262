"""Targets from the command line, and what each one says about itself.

A target is written ``NAME=URL,dialect=ollama|openai[,key=K][,model=M]
[,stream=yes|no][,ignore_eos=yes|no][,OTHER=VALUE...]``:

- ``key=env:VAR`` reads the key from the environment (keeps it out of shell history);
- any other ``OTHER=VALUE`` is recorded as the target's settings, e.g.
  ``quantization=Q4_1``, ``OLLAMA_NUM_PARALLEL=4``, ``flags=-t 1 --parallel 32``
  (a value cannot hold a comma).

Before measuring, :func:`describe` asks each target what it is: the model list
(``/v1/models`` or ``/api/tags``, also to pick the model when none is given),
the version (``/version``, ``/api/version``), Ollama's ``/api/show`` details
(format, quantization level) and llama.cpp's ``/props`` (slots, context size).
Whatever answers goes into the report; what does not is left out.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from vllama.bench.loadgen import Dialect, Target

_FLAGS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
_PROPS = ("total_slots", "model_path", "build_info", "chat_template_caps")


class TargetError(ValueError):
    """A target that cannot be used; the message says which and why."""


def _flag(name: str, key: str, value: str) -> bool:
    try:
        return _FLAGS[value.lower()]
    except KeyError:
        raise TargetError(f"target {name}: {key} must be yes or no, not {value!r}") from None


def parse_target(spec: str, *, environ: dict[str, str] | None = None) -> Target:
    """``NAME=URL,dialect=...`` as a :class:`Target` (its model may still be empty)."""
    env = os.environ if environ is None else environ
    head, *rest = spec.split(",")
    name, _, url = head.partition("=")
    name, url = name.strip(), url.strip().rstrip("/")
    if not name or not url.startswith(("http://", "https://")):
        raise TargetError(f"target {spec!r}: expected NAME=http://HOST:PORT first")
    options: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TargetError(f"target {name}: expected KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    dialect: Dialect
    match options.pop("dialect", ""):
        case "ollama":
            dialect = "ollama"
        case "openai":
            dialect = "openai"
        case other:
            raise TargetError(f"target {name}: dialect must be ollama or openai, not {other!r}")
    api_key = options.pop("key", "") or None
    if api_key is not None and api_key.startswith("env:"):
        if api_key[4:] not in env:
            raise TargetError(f"target {name}: environment variable {api_key[4:]} is not set")
        api_key = env[api_key[4:]]
    if dialect == "openai" and url.endswith("/v1"):
        url = url[: -len("/v1")]
    stream = _flag(name, "stream", options.pop("stream", "yes"))
    ignore_eos = _flag(name, "ignore_eos", options.pop("ignore_eos", "yes"))
    model = options.pop("model", "")
    return Target(name, url, dialect, stream, api_key, model, ignore_eos=ignore_eos, info=options)


async def _json(
    session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any = None
) -> Any:
    """The JSON answer of one request, or None on any failure."""
    data = None if body is None else orjson.dumps(body)
    try:
        async with session.request(
            method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            if resp.status != 200:
                return None
            return orjson.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        return None


def _first(items: object, key: str) -> str:
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return str(items[0].get(key) or "")
    return ""


async def _openai(session: aiohttp.ClientSession, t: Target) -> tuple[str, dict[str, Any]]:
    headers = {"authorization": f"Bearer {t.api_key}"} if t.api_key else {}
    reported: dict[str, Any] = {}
    listed = await _json(session, "GET", t.url + "/v1/models", headers)
    data = listed.get("data") if isinstance(listed, dict) else None
    model = t.model or _first(data, "id")
    for entry in data if isinstance(data, list) else ():
        if isinstance(entry, dict) and entry.get("id") == model:
            reported["model"] = {k: v for k, v in entry.items() if k != "permission"}
    version = await _json(session, "GET", t.url + "/version", headers)
    if isinstance(version, dict):
        reported["version"] = version.get("version")
    props = await _json(session, "GET", t.url + "/props", headers)  # llama.cpp's server
    if isinstance(props, dict):
        reported["props"] = {k: props[k] for k in _PROPS if k in props}
        settings = props.get("default_generation_settings")
        if isinstance(settings, dict) and "n_ctx" in settings:
            reported["props"]["n_ctx"] = settings["n_ctx"]
    return model, reported


async def _ollama(session: aiohttp.ClientSession, t: Target) -> tuple[str, dict[str, Any]]:
    headers = {"authorization": f"Bearer {t.api_key}"} if t.api_key else {}
    reported: dict[str, Any] = {}
    version = await _json(session, "GET", t.url + "/api/version", headers)
    if isinstance(version, dict):
        reported["version"] = version.get("version")
    model = t.model
    if not model:
        tags = await _json(session, "GET", t.url + "/api/tags", headers)
        model = _first(tags.get("models") if isinstance(tags, dict) else None, "name")
    shown = await _json(session, "POST", t.url + "/api/show", headers, {"model": model})
    if isinstance(shown, dict):
        reported["details"] = shown.get("details")
        reported["parameters"] = shown.get("parameters")
    return model, reported


async def describe(session: aiohttp.ClientSession, target: Target) -> tuple[Target, dict[str, Any]]:
    """The target with its model filled in, and its settings for the report."""
    ask = _openai if target.dialect == "openai" else _ollama
    model, reported = await ask(session, target)
    if not model:
        raise TargetError(
            f"target {target.name}: no model given (model=...) and none listed at {target.url}"
        )
    done = replace(target, model=model)
    return done, settings_of(done, reported)


def settings_of(target: Target, reported: dict[str, Any] | None = None) -> dict[str, Any]:
    """A target's settings as recorded: never its key."""
    return {
        "name": target.name,
        "url": target.url,
        "dialect": target.dialect,
        "endpoint": target.endpoint,
        "model": target.model,
        "stream": target.stream,
        "ignore_eos": target.ignore_eos and target.dialect == "openai",
        "key": target.api_key is not None,
        "info": dict(target.info),
        "reported": reported or {},
    }

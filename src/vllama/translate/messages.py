"""Ollama chat messages -> OpenAI chat messages (spec §3.1, §3.3).

The two shapes differ in ways that matter to the model's chat template:
images are separate base64 strings (OpenAI wants data-URI content parts),
tool-call arguments are objects (OpenAI wants JSON strings plus ids), and tool
results name the tool (OpenAI wants the call id). Kept apart from
``requests`` because it is the one part with real state (the id map).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson

from vllama.errors import BadRequest

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# vLLM decodes the bytes with PIL whatever the label; an image type keeps the
# URL acceptable to any validator that checks the ``image/`` prefix.
_FALLBACK_MIME = "image/jpeg"


def sniff_image_mime(data: bytes) -> str:
    """The MIME type of an image from its magic bytes."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return _FALLBACK_MIME


def image_part(encoded: object) -> dict[str, Any]:
    """One Ollama base64 image -> an OpenAI ``image_url`` content part."""
    if not isinstance(encoded, str):
        raise BadRequest("images must be an array of base64 strings", param="images")
    # Go's base64 decoder skips CR and LF; anything else must be valid.
    clean = encoded.replace("\r", "").replace("\n", "")
    try:
        raw = base64.b64decode(clean, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid image data: {exc}", param="images") from exc
    url = f"data:{sniff_image_mime(raw[:16])};base64,{clean}"
    return {"type": "image_url", "image_url": {"url": url}}


def user_content(content: str, images: object) -> str | list[dict[str, Any]]:
    """Plain text, or content parts when there are images (images first,
    where Ollama's templating puts ``[img-n]``)."""
    if images is None or images == []:
        return content
    if not isinstance(images, list):
        raise BadRequest("images must be an array of base64 strings", param="images")
    parts = [image_part(item) for item in images]
    if content:
        parts.append({"type": "text", "text": content})
    return parts


def _call_id(msg_index: int, call_index: int, name: str) -> str:
    """A stable ``call_<8 hex>`` id for a call the client sent without one."""
    digest = hashlib.blake2s(f"{msg_index}:{call_index}:{name}".encode(), digest_size=4)
    return "call_" + digest.hexdigest()


def _tool_calls(calls: object, msg_index: int) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise BadRequest("tool_calls must be an array", param="messages")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest("tool_calls[].function.name must be a string", param="messages")
        args = fn.get("arguments")
        if args is None:
            args_text = "{}"
        elif isinstance(args, str):  # already OpenAI-shaped: keep as sent
            args_text = args
        else:
            args_text = orjson.dumps(args).decode()
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = _call_id(msg_index, i, fn["name"])
        out.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": fn["name"], "arguments": args_text},
            }
        )
    return out


def map_messages(messages: object) -> list[dict[str, Any]]:
    """Translate an Ollama ``messages`` array; raise ``BadRequest`` on bad shapes."""
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise BadRequest("messages must be an array", param="messages")
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # unanswered (name, id) of the last assistant turn
    last_id_by_name: dict[str, str] = {}
    for index, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest("each message must be an object with a string role", param="messages")
        role = msg["role"].lower()
        content = msg.get("content")
        if content is None:
            content = ""
        elif not isinstance(content, str):
            raise BadRequest("message content must be a string", param="messages")
        mapped: dict[str, Any] = {"role": role}
        if role == "assistant":
            # ``thinking`` is dropped: templates re-render reasoning themselves.
            mapped["content"] = content
            if msg.get("tool_calls"):
                calls = _tool_calls(msg["tool_calls"], index)
                mapped["tool_calls"] = calls
                pending = [(c["function"]["name"], c["id"]) for c in calls]
                last_id_by_name.update(pending)
        elif role == "tool":
            mapped["content"] = content
            name = msg.get("tool_name")
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                call_id = _match_call(pending, last_id_by_name, name)
            else:
                pending = [p for p in pending if p[1] != call_id]
            if call_id:
                mapped["tool_call_id"] = call_id
            if isinstance(name, str) and name:
                mapped["name"] = name
        else:
            mapped["content"] = user_content(content, msg.get("images"))
        out.append(mapped)
    return out


def _match_call(
    pending: list[tuple[str, str]], last_id_by_name: dict[str, str], name: object
) -> str | None:
    """The call a tool result answers: the first unanswered call of that name
    in the latest assistant turn, else the latest call of that name, else the
    first unanswered call (a result without a name answers in order)."""
    for i, (call_name, call_id) in enumerate(pending):
        if call_name == name:
            del pending[i]
            return call_id
    if isinstance(name, str) and name in last_id_by_name:
        return last_id_by_name[name]
    if not name and pending:
        return pending.pop(0)[1]
    return None

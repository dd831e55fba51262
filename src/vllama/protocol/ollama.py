"""Ollama wire details that are not JSON shapes: durations, times, ``think``.

Ollama is a Go server, so some request fields follow Go library semantics
(``keep_alive`` is ``time.ParseDuration``) and responses use Go's formatting
(``created_at`` is ``time.Time`` marshalled as RFC 3339 with nanoseconds).
Clients rely on both, and on the exact error strings, so they live here,
written once and tested by tables.
"""

from __future__ import annotations

import time

from vllama.errors import BadRequest

#: The Ollama version we answer ``/api/version`` with. Clients gate features on
#: it, so it tracks a recent release whose API we cover.
OLLAMA_VERSION = "0.13.5"

THINK_LEVELS = ("high", "medium", "low", "max")

_INT64_MAX = (1 << 63) - 1
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# What Go's reflect.TypeOf prints for each decoded JSON type.
_GO_TYPE_NAMES = {
    bool: "bool",
    list: "[]interface {}",
    dict: "map[string]interface {}",
    str: "string",
    float: "float64",
    int: "float64",
}


def go_quote(s: str) -> str:
    """Quote ``s`` like Go's ``%q`` for the printable strings we echo back."""
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _InvalidDuration(Exception):
    """Raised inside the parser; turned into Go's message once, at the top."""


def parse_go_duration(text: str) -> int:
    """Port of Go's ``time.ParseDuration``; returns nanoseconds.

    Raises ``BadRequest`` with Go's own message (``time: invalid duration
    "x"``, ``time: missing unit ...``, ``time: unknown unit ...``).
    """
    try:
        return _parse_go_duration(text)
    except _InvalidDuration:
        raise BadRequest(f"time: invalid duration {go_quote(text)}") from None


def _parse_go_duration(text: str) -> int:
    invalid = _InvalidDuration
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        whole = int(s[:i]) if pre else 0
        s = s[i:]
        if whole > 1 << 63:
            raise invalid
        frac, scale, post = 0, 1, False
        if s[:1] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if frac > _INT64_MAX // 10:
                        overflow = True  # Go keeps reading digits but stops adding
                    else:
                        frac = frac * 10 + int(s[i])
                        scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and s[i] != "." and not ("0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise BadRequest(f"time: missing unit in duration {go_quote(text)}")
        unit_name, s = s[:i], s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise BadRequest(
                f"time: unknown unit {go_quote(unit_name)} in duration {go_quote(text)}"
            )
        if whole > (1 << 63) // unit:
            raise invalid
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (unit / scale))
            if value > 1 << 63:
                raise invalid
        total += value
        if total > 1 << 63:
            raise invalid
    if neg:
        return -total
    if total > _INT64_MAX:
        raise invalid
    return total


def parse_keep_alive(value: object, default: str) -> float | None:
    """Ollama's ``keep_alive`` in seconds; ``None`` means keep loaded forever.

    Strings follow ``time.ParseDuration``; numbers are seconds; any negative
    value means forever; ``None`` (absent or ``null``) falls back to
    ``default`` (itself a duration string, e.g. ``OLLAMA_KEEP_ALIVE``).
    """
    if value is None:
        value = default
    if isinstance(value, str):
        ns = parse_go_duration(value)
        return None if ns < 0 else ns / 1e9
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None if value < 0 else float(value)
    go_type = _GO_TYPE_NAMES.get(type(value), type(value).__name__)
    raise BadRequest(f"Unsupported type: '{go_type}'")


def format_time(epoch_ns: int) -> str:
    """Format a wall-clock time like Go's ``time.Time`` JSON in UTC.

    That is RFC 3339 with up to nine fractional digits, trailing zeros
    trimmed (``RFC3339Nano``): ``2023-08-04T19:22:45.4991Z``.
    """
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        stamp += "." + f"{nanos:09d}".rstrip("0")
    return stamp + "Z"


def parse_think(value: object) -> bool | str | None:
    """Validate Ollama's ``think``: a bool, a level name, or absent."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in THINK_LEVELS:
            return value
        raise BadRequest(
            f"invalid think value: {go_quote(value)} "
            '(must be "high", "medium", "low", "max", true, or false)',
            param="think",
        )
    raise BadRequest(
        'think must be a boolean or string ("high", "medium", "low", "max", true, or false)',
        param="think",
    )

"""The chat prompts a benchmark sends: a built-in set, or a JSONL file.

Every target gets the same prompts in the same order. A prompt is a list of
chat messages (never flattened into text, so each engine applies its own chat
template). The built-in prompts all ask for a long answer, so a target that
cannot be told to ignore the end-of-sequence token (Ollama's API) still tends
to generate the full ``max_tokens``:

- ``short``: one-line requests (a few dozen prompt tokens);
- ``long``: a system message and a ~500-token document to work from, which
  makes prefill a real part of each request;
- ``mixed`` (the default): short and long alternating.

A JSONL file holds one prompt per line, either ``{"messages": [{"role": ...,
"content": ...}, ...]}`` or ``{"prompt": "text"}`` (a single user message);
blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

Message = dict[str, Any]
Prompt = tuple[Message, ...]  #: the ``messages`` of one chat request

BUILTIN = ("short", "long", "mixed")


class PromptError(ValueError):
    """A prompt file that cannot be used; the message names the line."""


def user(text: str) -> Prompt:
    return ({"role": "user", "content": text},)


_SHORT_TEXTS = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in great detail, step by step, how a steam engine works, with its history.",
    "Write a long essay on the history of bread across many countries and centuries.",
    "Describe, day by day and in vivid detail, a long journey across a desert.",
)

_SYSTEM = (
    "You are a careful technical writer. Answer at length, in full sentences, and never stop "
    "early: the reader wants every detail you can give."
)

_DOCUMENT = """\
Harbour Street Water Works: operations notes, spring season.

The works draws raw water from the river through two screened intakes. The north intake sits
above the weir and is used whenever the river runs clear; the south intake, below the weir, is
opened only during maintenance of the north screens, because its water carries more silt after
rain. Raw water flows by gravity into the settling basin, where alum is dosed at a rate set each
morning from a jar test. The operator on the early shift records the turbidity of the raw water,
the chosen dose, and the turbidity leaving the basin; a rise of more than two units between two
readings calls for a second jar test before noon.

From the basin the water passes through six rapid sand filters. Each filter runs until its head
loss reaches the limit painted on its gauge, or for seventy-two hours, whichever comes first,
and is then backwashed with treated water from the high tank. Backwash water goes to the
recovery lagoon and is returned to the head of the works after it has settled for a day. Filter
four has a cracked underdrain lateral and is to be backwashed at reduced flow until the
contractor replaces it; its effluent turbidity is read every two hours instead of every four.

Chlorine is dosed after filtration, aiming at a free residual of half a milligram per litre
leaving the clear well. Residuals at the three district reservoirs are read by telemetry and
checked by hand every Tuesday. The hill reservoir has run low on residual during warm weeks in
past years; if its reading falls below the alarm level the duty manager may raise the dose at
the works in steps of one tenth, waiting two hours between steps, and must log each change.

The standby generator is tested under load on the first Monday of each month for thirty
minutes. Fuel is ordered when the tank falls below half. During a power cut the generator
carries the high-lift pumps and the chlorine dosing but not the backwash pumps, so no filter may
be washed until mains power returns; operators should expect head loss to build and plan which
filters to take out of service first.

Staff changes this season: the laboratory moves to the ground floor of the old pump house in
May, and samples are to be delivered there from the first of the month. The night shift now
starts at ten rather than eleven, and the handover checklist has a new line for the state of
the recovery lagoon."""

_LONG_TASKS = (
    "Write a complete training guide for a new operator based on these notes, section by "
    "section, explaining the reason behind every rule.",
    "Rewrite these notes as a detailed day-by-day diary of one week at the works, covering "
    "every shift and every check in the notes.",
    "List every risk you can find in these notes and, for each one, explain at length what "
    "could go wrong and how the staff should prepare for it.",
    "Explain to a visiting school class, in a long and friendly talk, how the water in these "
    "notes travels from the river to their taps.",
)


def builtin(name: str) -> list[Prompt]:
    """One of the built-in sets: ``short``, ``long`` or ``mixed``."""
    short = [user(text) for text in _SHORT_TEXTS]
    long: list[Prompt] = [
        (
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{_DOCUMENT}\n\n{task}"},
        )
        for task in _LONG_TASKS
    ]
    if name == "short":
        return short
    if name == "long":
        return long
    if name == "mixed":
        return [p for pair in zip(short, long, strict=True) for p in pair]
    raise PromptError(f"no built-in prompt set {name!r} (known: {', '.join(BUILTIN)})")


def _message(obj: object, where: str) -> Message:
    if not isinstance(obj, dict) or not isinstance(obj.get("role"), str):
        raise PromptError(f"{where}: each message needs a string 'role'")
    if not isinstance(obj.get("content"), str):
        raise PromptError(f"{where}: each message needs a string 'content'")
    return dict(obj)


def parse_line(line: str, where: str) -> Prompt:
    """One JSONL line: ``{"messages": [...]}`` or ``{"prompt": "..."}``."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise PromptError(f"{where}: not JSON ({exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
        return user(obj["prompt"])
    if isinstance(obj, dict) and isinstance(obj.get("messages"), list) and obj["messages"]:
        return tuple(_message(m, where) for m in obj["messages"])
    raise PromptError(f'{where}: expected {{"messages": [...]}} or {{"prompt": "..."}}')


def load_jsonl(path: Path) -> list[Prompt]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot read {path}: {exc.strerror or exc}") from exc
    prompts = [
        parse_line(line, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not prompts:
        raise PromptError(f"{path}: no prompts")
    return prompts


def load(spec: str) -> list[Prompt]:
    """A built-in set by name, else a JSONL file by path."""
    if spec in BUILTIN:
        return builtin(spec)
    path = Path(spec)
    if not path.exists() and not path.suffix:
        raise PromptError(f"{spec!r} is no built-in prompt set ({', '.join(BUILTIN)}) nor a file")
    return load_jsonl(path)


def as_messages(prompt: str | Sequence[Message]) -> list[Message]:
    """A prompt as a request's ``messages``; a bare string is one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]

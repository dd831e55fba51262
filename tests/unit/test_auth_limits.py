"""Keys, limits, ceilings and usage metering: the pure parts, with a fake clock."""

from __future__ import annotations

import re

import pytest

from vllama.auth.keys import PREFIX, Limits, hash_secret, new_record, parse_expires
from vllama.auth.limits import Limiter, Limiters, check_ceilings
from vllama.auth.metering import Meter, sse_usage
from vllama.auth.principal import Principal
from vllama.errors import BadRequest, Forbidden, RateLimited


def test_secrets_are_recognisable_random_and_stored_hashed() -> None:
    record, secret = new_record("a")
    other, second = new_record("b")
    assert re.fullmatch(r"vll-[A-Za-z0-9_-]{43}", secret)
    assert secret != second
    assert record.id != other.id
    assert record.hash == hash_secret(secret) != secret
    assert secret not in repr(record)
    assert "hash" not in record.public()
    assert record.prefix == secret[: len(PREFIX) + 4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", 1000 + 30 * 86400),
        ("12h", 1000 + 12 * 3600),
        ("90m", 1000 + 90 * 60),
        ("2w", 1000 + 14 * 86400),
        ("never", None),
        (None, None),
        ("1970-01-01T00:20:00", 1200),
        ("1970-01-01T01:20:00+01:00", 1200),
    ],
)
def test_expiry(text: str | None, expected: float | None) -> None:
    assert parse_expires(text, now=1000) == expected


def test_bad_expiry_names_itself() -> None:
    with pytest.raises(ValueError, match="soon"):
        parse_expires("soon")


def test_requests_per_minute_burst_then_pace() -> None:
    limiter = Limiter(Limits(rpm=2), now=0)
    limiter.admit(now=0)
    limiter.admit(now=0)
    with pytest.raises(RateLimited) as caught:
        limiter.admit(now=0)
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(30)
    limiter.admit(now=30)  # one refilled after 60/2 s


def test_tokens_per_minute_charged_after_the_fact() -> None:
    limiter = Limiter(Limits(tpm=60), now=0)
    limiter.admit(now=0)
    limiter.charge(100, now=0)  # the answer overdrew the bucket
    with pytest.raises(RateLimited) as caught:
        limiter.admit(now=1)
    assert caught.value.retry_after == pytest.approx(40)  # back above zero at t=41
    limiter.admit(now=41)


def test_concurrency_counts_until_release() -> None:
    limiter = Limiter(Limits(max_concurrency=1))
    limiter.admit()
    with pytest.raises(RateLimited, match="concurrent") as caught:
        limiter.admit()
    assert caught.value.retry_after == 1
    limiter.release()
    limiter.admit()


def test_pace_counts_rates_but_not_concurrency() -> None:
    """A WebSocket's later requests: its connection holds the one slot."""
    limiter = Limiter(Limits(rpm=2, tpm=60, max_concurrency=1), now=0)
    limiter.admit(now=0)  # the handshake
    limiter.pace(now=0)
    assert limiter.active == 1
    with pytest.raises(RateLimited, match="request rate"):
        limiter.pace(now=0)
    limiter.charge(100, now=0)
    with pytest.raises(RateLimited, match="token rate"):
        limiter.pace(now=30)


def test_limiters_keep_state_per_principal_until_limits_change() -> None:
    limiters = Limiters()
    first = limiters.get("k", Limits(rpm=1))
    assert limiters.get("k", Limits(rpm=1)) is first
    first.admit()
    changed = limiters.get("k", Limits(rpm=5))
    assert changed is not first
    assert changed.active == 1


def test_ceilings() -> None:
    check_ceilings({"messages": [{}] * 3, "max_tokens": 10}, max_messages=3, max_tokens=10)
    with pytest.raises(BadRequest, match="too many messages"):
        check_ceilings({"messages": [{}] * 4}, max_messages=3, max_tokens=None)
    with pytest.raises(BadRequest, match="max_tokens 11"):
        check_ceilings({"max_completion_tokens": 11}, max_messages=None, max_tokens=10)
    with pytest.raises(BadRequest, match="max_tokens 99"):
        check_ceilings({"options": {"num_predict": 99}}, max_messages=None, max_tokens=10)


def test_allow_list_compares_normalised_names() -> None:
    principal = Principal("k", "k", models=frozenset({"smollm2:135m"}))
    principal.check_model("SmolLM2:135M")
    with pytest.raises(Forbidden, match="other"):
        principal.check_model("other", "other:latest")


def recorded() -> tuple[Principal, list[tuple[str, str, int, int]]]:
    seen: list[tuple[str, str, int, int]] = []
    return Principal("k", "k", sink=lambda *row: seen.append(row)), seen


def test_meter_reads_usage_from_a_stream_split_anywhere() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":16}}\n\n'
        b"data: [DONE]\n\n"
    )
    earlier = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n' * 200
    for cut in range(1, len(stream), 3):
        principal, seen = recorded()
        meter = Meter(principal, "m")
        meter.feed(earlier)
        for i in range(0, len(stream), cut):
            meter.feed(stream[i : i + cut])
        meter.close()
        assert seen == [("k", "m", 7, 16)], cut


def test_meter_records_once_and_zero_without_usage() -> None:
    principal, seen = recorded()
    meter = Meter(principal, "m")
    meter.body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}')
    meter.close()
    assert seen == [("k", "m", 3, 4)]
    principal, seen = recorded()
    meter = Meter(principal, "m")
    meter.feed(b'data: {"choices":[]}\n\n')
    meter.close()
    assert seen == [("k", "m", 0, 0)]
    assert sse_usage(b'data: {"usage": {"prompt_tokens": 1}}') == (0, 0)  # cut: no newline

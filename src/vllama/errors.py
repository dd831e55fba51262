"""The one error tree of vLLama.

Every failure a caller can see is one of these, raised where it is detected
(translation, upstream transport, supervisor, auth) and rendered once, at the
edge, in the caller's dialect (``server/errors.py``): Ollama's
``{"error": "..."}`` or OpenAI's ``{"error": {"message", "type", ...}}``.
Library exceptions are mapped to these where they enter (``raise ... from exc``)
so no handler ever has to know about aiohttp or pydantic.

    VllamaError
    ├── BadRequest            400  malformed body, wrong option types, bad values
    │   └── ModelRequired     400  "model is required"
    ├── Unauthorized          401
    ├── Forbidden             403
    ├── ModelNotFound         404  "model 'x' not found"
    ├── PayloadTooLarge       413
    ├── RateLimited           429  (+ Retry-After)
    ├── NotSupported          501  an endpoint this build does not offer yet
    ├── EngineUnavailable     503  (+ Retry-After) engine starting, restarting, failed
    └── UpstreamError         the engine answered with an error: status relayed
        ├── UpstreamUnreachable  502  connection refused / reset before any byte
        └── UpstreamTimeout      504  no first byte, or a stall, within the limit
"""

from __future__ import annotations


class VllamaError(Exception):
    """Base of every error vLLama shows to a caller."""

    status: int = 500
    #: OpenAI's ``error.type`` for this kind of failure.
    openai_type: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.param = param
        self.code = code


class BadRequest(VllamaError):
    status = 400
    openai_type = "invalid_request_error"


class ModelRequired(BadRequest):
    def __init__(self) -> None:
        super().__init__("model is required", param="model")


class Unauthorized(VllamaError):
    status = 401
    openai_type = "authentication_error"


class Forbidden(VllamaError):
    status = 403
    openai_type = "permission_error"


class ModelNotFound(VllamaError):
    status = 404
    openai_type = "not_found_error"

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found", param="model", code="model_not_found")
        self.name = name


class PayloadTooLarge(VllamaError):
    status = 413
    openai_type = "invalid_request_error"


class RateLimited(VllamaError):
    status = 429
    openai_type = "rate_limit_error"


class NotSupported(VllamaError):
    status = 501
    openai_type = "invalid_request_error"


class EngineUnavailable(VllamaError):
    status = 503
    openai_type = "api_error"


class UpstreamError(VllamaError):
    """The engine answered with an error; its status and message are relayed."""

    status = 502

    def __init__(self, message: str, *, status: int = 502) -> None:
        super().__init__(message, status=status)
        if 400 <= status < 500:
            self.openai_type = "invalid_request_error" if status != 404 else "not_found_error"


class UpstreamUnreachable(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=502)


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=504)

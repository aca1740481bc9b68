"""What kind of failure a model call through litellm ended with: the one reading used by the
built-in agent (loopmeter/agents/builtin.py) and by model tasks (loopmeter/evals/model_tasks.py)."""

from __future__ import annotations

from loopmeter.vocab import ErrorKind


def model_error_kind(exc: BaseException) -> ErrorKind:
    """AUTH: the API refused the key or its permissions; TIMEOUT: the call ran out of time; INFRA:
    the API could not be reached, was overloaded or failed inside, or limited the rate; MODEL: the
    API refused or failed the call in any other way (a bad request, an unknown model...).

    litellm maps every provider's errors to its own exception types; the standard library's
    timeout and connection errors are read the same way."""
    import litellm  # already loaded by the call that failed; never at start-up

    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return ErrorKind.AUTH
    if isinstance(exc, litellm.Timeout | TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, litellm.APIConnectionError | litellm.ServiceUnavailableError | litellm.InternalServerError
                  | litellm.RateLimitError | ConnectionError):
        return ErrorKind.INFRA
    return ErrorKind.MODEL

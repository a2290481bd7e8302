"""The model path's errors, apart from the client so the endpoint checks can raise them too."""


class LLMError(Exception):
    """Base of every error this module raises; the message is one line meant for users."""


class LLMAuthError(LLMError):
    """The endpoint refused the request for a reason retrying cannot fix (401, 403, 400, 404...)."""


class ContextOverflow(LLMAuthError):
    """The prompt does not fit the model's context (HTTP 400 context_length_exceeded); a smaller prompt may."""


class LLMUnavailable(LLMError):
    """The endpoint could not be reached or kept failing after every retry."""


class Cancelled(LLMError):
    """The request was stopped by the client (a Ctrl-C): its reply, if any, is dropped unseen."""

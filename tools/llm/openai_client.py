"""Calls to an OpenAI-compatible server (vLLM first), shared by the LLM and the VLM backends.

One job: turn a chat request into a response or a `BackendError` that says what is wrong.
- bounded retries with exponential backoff and jitter, only for errors that a retry can fix
  (connection refused or reset, timeouts, 429, 5xx); the client's own retry loop is off so
  that the bound is ours and every attempt is logged;
- a per-request timeout, so a server that stops answering mid-run costs at most
  `timeout_s * (max_retries + 1)` plus the backoff, never a hang;
- a concurrency limit (a semaphore shared by every call through this object): vLLM batches
  concurrent requests, but an unbounded fan-out would only queue inside the server;
- a wrong model name (404) is checked against `GET /v1/models`, so the error lists what the
  server does serve.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import openai

from retlink.config import OpenAIServerConfig
from retlink.errors import BackendError

if TYPE_CHECKING:
    from retlink.config import CaptionerConfig, LLMConfig

log = logging.getLogger(__name__)

_RETRYABLE = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
)

#: the connection defaults, written once in `OpenAIServerConfig`
_DEFAULTS = OpenAIServerConfig()


class OpenAICompatClient:
    """A thread-safe wrapper around `openai.OpenAI` for one served model.

    The one place that takes the connection settings: `OpenAILLM` and `OpenAIVLMCaptioner` are
    handed a built client (`OpenAILLM(OpenAICompatClient(model, base_url))`), and their
    `from_config` builds it with `OpenAICompatClient.from_config`. The defaults of `timeout_s`,
    `max_retries` and `max_concurrency` are `OpenAIServerConfig`'s.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = _DEFAULTS.timeout_s,
        max_retries: int = _DEFAULTS.max_retries,
        max_concurrency: int = _DEFAULTS.max_concurrency,
        backoff_s: float = 0.5,
    ) -> None:
        if not model:
            raise BackendError("the openai backend needs model (the model name the server serves)")
        if not base_url:
            raise BackendError(
                f"model {model!r}: the openai backend needs base_url (e.g. http://127.0.0.1:8011/v1)"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_retries = max(0, max_retries)
        self.max_concurrency = max(1, max_concurrency)
        self.backoff_s = backoff_s
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0
        )
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._checked = False

    @classmethod
    def from_config(cls, cfg: LLMConfig | CaptionerConfig) -> OpenAICompatClient:
        """The client for a role's config: its model and its `OpenAIServerConfig` fields."""
        return cls(
            cfg.model,
            cfg.base_url,
            cfg.api_key,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            max_concurrency=cfg.max_concurrency,
        )

    def served_models(self) -> list[str]:
        """The model ids the server lists; BackendError when it cannot be reached."""
        try:
            return [m.id for m in self._client.models.list().data]
        except openai.APIConnectionError as e:
            raise BackendError(f"cannot reach the model server at {self.base_url}: {e}") from None
        except openai.APIStatusError as e:
            raise BackendError(
                f"model server at {self.base_url} answered {e.status_code} to /models: {e}"
            ) from None

    def check(self) -> None:
        """Fail with a clear message unless the server is up and serves `model` (cached once true)."""
        if self._checked:
            return
        served = self.served_models()
        if self.model not in served:
            raise BackendError(
                f"model {self.model!r} is not served at {self.base_url}; it serves: {', '.join(served) or 'nothing'}"
            )
        self._checked = True

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> Any:
        """One chat completion (a `ChatCompletion`), retried within the bound."""
        attempt = 0
        while True:
            try:
                with self._slots:
                    return self._client.chat.completions.create(model=self.model, messages=messages, **params)
            except openai.NotFoundError:
                self._checked = False
                self.check()  # raises the clear "not served" / "unreachable" error
                raise BackendError(f"{self.base_url} answered 404 for model {self.model!r}") from None
            except openai.AuthenticationError as e:
                raise BackendError(f"model server at {self.base_url} rejected the API key: {e}") from None
            except openai.BadRequestError as e:
                raise BackendError(f"model server at {self.base_url} rejected the request: {e}") from None
            except _RETRYABLE as e:
                if attempt >= self.max_retries:
                    kind = "timed out" if isinstance(e, openai.APITimeoutError) else "failed"
                    raise BackendError(
                        f"request to {self.model!r} at {self.base_url} {kind} after {attempt + 1} attempt(s): {e}"
                    ) from None
                delay = self.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
                log.warning(
                    "model server %s: %s; retry %d/%d in %.1fs",
                    self.base_url,
                    e,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
                attempt += 1
            except openai.APIStatusError as e:
                raise BackendError(f"model server at {self.base_url} answered {e.status_code}: {e}") from None


def message_reasoning(message: Any) -> str:
    """The chain of thought a server returned beside the answer (`reasoning`, older `reasoning_content`)."""
    extra = getattr(message, "model_extra", None) or {}
    for key in ("reasoning", "reasoning_content"):
        value = getattr(message, key, None) or extra.get(key)
        if value:
            return str(value).strip()
    return ""

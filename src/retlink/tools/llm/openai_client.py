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
  server does serve;
- several replicas of one served model (`base_url` as a list): each request goes to the replica
  with the fewest requests in flight (ties taken in turn); a replica whose request fails with a
  retryable error is left out for a back-off period (`replica_backoff_s`, doubling with each
  failure in a row, up to 8x) and the request is retried at once on another replica. The
  attempts stay bounded by `max_retries + 1` as for one server. When every replica is out, the
  one whose back-off ends first is tried after the usual retry delay, so one replica behaves
  exactly as a single server did. Two races are closed: a request's retry goes to a replica it
  has not failed on while one is up, and an answer to a request sent *before* a replica's last
  failure does not clear that failure's back-off (a replica that goes down mid-run still
  finishes the requests it had, and those late answers say nothing of its health now).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai

from retlink.core.errors import BackendError
from retlink.core.schema import OpenAIServerConfig

if TYPE_CHECKING:
    from retlink.core.schema import CaptionerConfig, LLMConfig

log = logging.getLogger(__name__)

_RETRYABLE = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
)

#: the connection defaults, written once in `OpenAIServerConfig`
_DEFAULTS = OpenAIServerConfig()
#: a failing replica's back-off doubles per failure in a row up to this factor
MAX_BACKOFF_FACTOR = 8


@dataclass(eq=False)
class Replica:
    """One server of a served model, with what the client knows of its health.

    `in_flight`, `failures` and `down_until` change under the client's lock only."""

    base_url: str
    client: openai.OpenAI
    in_flight: int = 0
    #: failed requests in a row (0 once one succeeds)
    failures: int = 0
    #: `time.monotonic()` before which the replica is left out (while another is up)
    down_until: float = 0.0
    #: `time.monotonic()` of its last failed attempt (an answer to an older request is no news)
    failed_at: float = float("-inf")
    #: requests it answered
    served: int = 0

    def up(self, now: float) -> bool:
        return now >= self.down_until


class OpenAICompatClient:
    """A thread-safe wrapper around `openai.OpenAI` for one served model on one or more replicas.

    The one place that takes the connection settings: `OpenAILLM` and `OpenAIVLMCaptioner` are
    handed a built client (`OpenAILLM(OpenAICompatClient(model, base_url))`), and their
    `from_config` builds it with `OpenAICompatClient.from_config`. The defaults of `timeout_s`,
    `max_retries`, `max_concurrency` and `replica_backoff_s` are `OpenAIServerConfig`'s.
    """

    def __init__(
        self,
        model: str,
        base_url: str | list[str] | tuple[str, ...],
        api_key: str | None = None,
        *,
        timeout_s: float = _DEFAULTS.timeout_s,
        max_retries: int = _DEFAULTS.max_retries,
        max_concurrency: int = _DEFAULTS.max_concurrency,
        replica_backoff_s: float = _DEFAULTS.replica_backoff_s,
        backoff_s: float = 0.5,
    ) -> None:
        if not model:
            raise BackendError("the openai backend needs model (the model name the server serves)")
        urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        urls = [u.rstrip("/") for u in urls if u]
        if not urls:
            raise BackendError(
                f"model {model!r}: the openai backend needs base_url (e.g. http://127.0.0.1:8011/v1)"
            )
        self.model = model
        self.replicas = [
            Replica(u, openai.OpenAI(base_url=u, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0))
            for u in urls
        ]
        #: every replica's URL, comma-separated (one URL for one server): for messages
        self.base_url = ", ".join(urls)
        self.max_retries = max(0, max_retries)
        #: requests in flight at once through this client: `max_concurrency` per replica
        self.max_concurrency = max(1, max_concurrency) * len(urls)
        self.replica_backoff_s = replica_backoff_s
        self.backoff_s = backoff_s
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._lock = threading.Lock()
        self._turn = 0
        self._checked = False

    @classmethod
    def from_config(cls, cfg: LLMConfig | CaptionerConfig) -> OpenAICompatClient:
        """The client for a role's config: its model and its `OpenAIServerConfig` fields."""
        return cls(
            cfg.model,
            cfg.base_urls,
            cfg.api_key,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            max_concurrency=cfg.max_concurrency,
            replica_backoff_s=cfg.replica_backoff_s,
        )

    # -- replica choice -----------------------------------------------------------------------

    def _acquire(self, tried: set[int]) -> tuple[Replica, float]:
        """The replica for the next attempt, counted in flight, and the attempt's start time: the
        least busy one that is up and not in `tried` (the indices this request failed on), else the
        least busy one up, or, when all are out, the one whose back-off ends first."""
        with self._lock:
            now = time.monotonic()
            n = len(self.replicas)
            order = [(self._turn + i) % n for i in range(n)]
            self._turn = (self._turn + 1) % n
            up = [i for i in order if self.replicas[i].up(now)]
            fresh = [i for i in up if i not in tried]
            pool = fresh or up
            if pool:
                replica = min((self.replicas[i] for i in pool), key=lambda r: r.in_flight)
            else:
                replica = min((self.replicas[i] for i in order), key=lambda r: r.down_until)
            replica.in_flight += 1
            return replica, now

    def _release(self, replica: Replica, outcome: str, started: float, tried: set[int]) -> bool:
        """Record an attempt's outcome ("ok", "answered": an error reply that says nothing of its
        health, "failed"); True when a replica this request has not failed on is up to retry on."""
        with self._lock:
            replica.in_flight -= 1
            if outcome != "failed":
                if started >= replica.failed_at:  # an older request's answer is no news of its health
                    replica.failures, replica.down_until = 0, 0.0
                replica.served += outcome == "ok"
                return False
            self._back_off(replica)
            tried.add(self.replicas.index(replica))
            now = time.monotonic()
            return any(r.up(now) for i, r in enumerate(self.replicas) if i not in tried)

    def _back_off(self, replica: Replica) -> None:
        """Leave a failing replica out for a while (call under the lock)."""
        replica.failures += 1
        replica.failed_at = time.monotonic()
        factor = min(2 ** (replica.failures - 1), MAX_BACKOFF_FACTOR)
        replica.down_until = time.monotonic() + self.replica_backoff_s * factor
        if len(self.replicas) > 1:
            log.warning(
                "model server %s failed %d time(s) in a row; left out for %.0fs",
                replica.base_url,
                replica.failures,
                self.replica_backoff_s * factor,
            )

    # -- requests -----------------------------------------------------------------------------

    def _served_models(self, replica: Replica) -> list[str]:
        try:
            return [m.id for m in replica.client.models.list().data]
        except openai.APIConnectionError as e:
            raise BackendError(f"cannot reach the model server at {replica.base_url}: {e}") from None
        except openai.APIStatusError as e:
            raise BackendError(
                f"model server at {replica.base_url} answered {e.status_code} to /models: {e}"
            ) from None

    def served_models(self) -> list[str]:
        """The model ids the server lists (with replicas, the first one that answers);
        BackendError when none can be reached."""
        errors = []
        for replica in sorted(self.replicas, key=lambda r: r.down_until):
            try:
                return self._served_models(replica)
            except BackendError as e:
                if len(self.replicas) > 1:
                    with self._lock:
                        self._back_off(replica)
                errors.append(str(e))
        raise BackendError("; ".join(errors))

    def _check_replica(self, replica: Replica) -> None:
        served = self._served_models(replica)
        if self.model not in served:
            raise BackendError(
                f"model {self.model!r} is not served at {replica.base_url}; it serves: {', '.join(served) or 'nothing'}"
            )

    def check(self) -> None:
        """Fail with a clear message unless a server is up and serves `model` (cached once true)."""
        if self._checked:
            return
        served = self.served_models()
        if self.model not in served:
            raise BackendError(
                f"model {self.model!r} is not served at {self.base_url}; it serves: {', '.join(served) or 'nothing'}"
            )
        self._checked = True

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> Any:
        """One chat completion (a `ChatCompletion`), retried within the bound (on another
        replica at once when one is up)."""
        attempt = 0
        tried: set[int] = set()  # the replicas this request failed on
        while True:
            with self._slots:
                replica, started = self._acquire(tried)
                outcome = "answered"
                try:
                    out = checked_reply(
                        replica.client.chat.completions.create(model=self.model, messages=messages, **params),
                        replica.base_url,
                    )
                    outcome = "ok"
                    return out
                except ValueError as e:  # the SDK parses the body as JSON: a server that sent something else
                    raise BackendError(f"model server at {replica.base_url} sent a reply that is not JSON: {e}") from None
                except openai.NotFoundError:
                    self._check_replica(replica)  # raises the clear "not served" / "unreachable" error
                    raise BackendError(f"{replica.base_url} answered 404 for model {self.model!r}") from None
                except openai.AuthenticationError as e:
                    raise BackendError(f"model server at {replica.base_url} rejected the API key: {e}") from None
                except openai.BadRequestError as e:
                    raise BackendError(f"model server at {replica.base_url} rejected the request: {e}") from None
                except _RETRYABLE as e:
                    outcome, error = "failed", e
                except openai.APIStatusError as e:
                    raise BackendError(f"model server at {replica.base_url} answered {e.status_code}: {e}") from None
                finally:
                    other_up = self._release(replica, outcome, started, tried)
            # a retryable failure (the slot is free again while we wait)
            if attempt >= self.max_retries:
                kind = "timed out" if isinstance(error, openai.APITimeoutError) else "failed"
                raise BackendError(
                    f"request to {self.model!r} at {replica.base_url} {kind} after {attempt + 1} attempt(s): {error}"
                ) from None
            delay = 0.0 if other_up else self.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
            log.warning(
                "model server %s: %s; retry %d/%d %s",
                replica.base_url,
                error,
                attempt + 1,
                self.max_retries,
                "on another replica" if other_up else f"in {delay:.1f}s",
            )
            time.sleep(delay)
            attempt += 1


def checked_reply(reply: Any, base_url: str) -> Any:
    """`reply` if it has a first choice with a message whose content is text (or null).

    The SDK builds replies without validating them, so a broken or hostile server's reply would
    otherwise surface as IndexError/AttributeError deep in a caller; every caller reads
    `reply.choices[0].message.content`, which this makes safe.
    """
    choices = getattr(reply, "choices", None)
    message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
    if message is None:
        raise BackendError(f"model server at {base_url} sent a reply without a message: {str(reply)[:200]!r}")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise BackendError(f"model server at {base_url} sent message content that is not text: {str(content)[:200]!r}")
    return reply


def message_reasoning(message: Any) -> str:
    """The chain of thought a server returned beside the answer (`reasoning`, older `reasoning_content`)."""
    extra = getattr(message, "model_extra", None) or {}
    for key in ("reasoning", "reasoning_content"):
        value = getattr(message, key, None) or extra.get(key)
        if value:
            return str(value).strip()
    return ""

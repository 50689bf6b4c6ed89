"""A fake OpenAI-compatible chat server (named as such) for the tests that check the request
bodies the OpenAI backend sends: routes on a real HTTP server on 127.0.0.1 (`tests.loopback`)
that record every request body and answer with canned messages (a chain of thought, then a
constrained JSON answer); and `QueuedChatServer`, for injected faults, which answers each chat
request with the next reply a test queued (a broken answer, an HTTP error)."""

from __future__ import annotations

import json
import time

from tests.loopback import QuietHandler

MODEL = "qwen3-fake"
MESSAGES = [{"role": "user", "content": "Which entity is [Falcon]? Q1: Falcon 9 rocket. NIL: none."}]


class FakeChatServer(QuietHandler):
    """A fake OpenAI-compatible server (named as such): lists one model, records chat request bodies."""

    def do_GET(self) -> None:
        self._json({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.record(self.path, body)
        answering = str(body["messages"][-1]["content"]).startswith("Give your final answer")  # choose's 2nd step
        content = '{"answer": "Q1"}' if answering else "The image shows a rocket at a launch pad."
        self._json({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
        })

    def _json(self, data: dict) -> None:
        self.send_body(200, "application/json", json.dumps(data).encode())


class QueuedChatServer(QuietHandler):
    """A fake OpenAI-compatible chat server for injected faults: answers every chat request with
    the reply queued in `server.replies` (an int: that HTTP status, no body to use)."""

    def do_GET(self) -> None:
        self.send_body(200, "application/json", json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.record(self.path, body)
        reply = self.server.replies.pop(0) if self.server.replies else "no reply queued"
        if isinstance(reply, int):
            self.send_body(reply, "application/json", b'{"error": "injected fault"}')
            return
        self.send_body(200, "application/json", json.dumps({
            "id": "x", "object": "chat.completion", "created": int(time.time()), "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
        }).encode())

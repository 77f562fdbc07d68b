"""On-disk answer cache keyed by the request's content hash, a request budget, and the client combining them."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from vglamm.errors import ConfigError
from vglamm.io.atomic import write_text_atomic

from .backends import BudgetExhausted, ChatBackend, ChatRequest


def payload_key(payload: dict) -> str:
    """SHA-256 of the canonical JSON of a request payload (model, messages with image data URLs, settings)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    """One JSON file per answer under ``root/<2 hex>/<key>.json``; written atomically, safe across threads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text("utf-8"))["response"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError):
            return None  # a damaged entry is a miss; the next answer replaces it

    def put(self, key: str, response: str, *, model: str = "") -> None:
        write_text_atomic(self._path(key), json.dumps({"key": key, "model": model, "response": response}))


class RequestBudget:
    """At most ``max_requests`` model calls (cache hits are free); ``None`` means unlimited."""

    def __init__(self, max_requests: int | None = None):
        if max_requests is not None and max_requests < 0:
            raise ConfigError("max_requests must be >= 0 or None")
        self.max_requests = max_requests
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.max_requests is not None and self.used >= self.max_requests:
                raise BudgetExhausted(f"request budget of {self.max_requests} spent; rerun with a larger --max-requests")
            self.used += 1


@dataclass
class ClientStats:
    requests: int = 0
    cache_hits: int = 0


class CachedClient:
    """Ask a back-end through the cache and the budget: a cached answer costs nothing and no budget."""

    def __init__(self, backend: ChatBackend, cache: ResponseCache | None, budget: RequestBudget | None = None):
        self.backend = backend
        self.cache = cache
        self.budget = budget or RequestBudget(None)
        self.stats = ClientStats()
        self._lock = threading.Lock()

    def ask(self, request: ChatRequest) -> str:
        payload = self.backend.payload(request)
        key = payload_key(payload)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                with self._lock:
                    self.stats.cache_hits += 1
                return hit
        self.budget.take()
        with self._lock:
            self.stats.requests += 1
        complete_payload = getattr(self.backend, "complete_payload", None)
        # Send the exact payload that was hashed, so the key always describes what the model saw.
        answer = complete_payload(payload) if complete_payload else self.backend.complete(request)
        if self.cache is not None:
            self.cache.put(key, answer, model=self.backend.name)
        return answer

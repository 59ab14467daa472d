"""Writer schemas by id from a Confluent-compatible Schema Registry (confluent-kafka's
SchemaRegistryClient), each fetched once and kept with what was built from it; an id the registry
does not know is asked again after UNKNOWN_RETRY_S, so a schema registered later is read without a
restart."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from kldrift.exceptions import SchemaRegistryError
from kldrift.schemas.config import SchemaRegistrySpec

UNKNOWN_RETRY_S = 10.0
"""How long an id the registry answered 404 for stays unknown before it is asked again."""
_RETRIABLE_STATUS = frozenset({408, 425, 429})

Built = TypeVar("Built")


class RegistryUnreachable(Exception):
    """The registry did not answer (connection refused, timeout, a 5xx): worth retrying."""


class UnknownSchema(Exception):
    """The registry does not have this id, or its schema is not of the expected type."""


def shown_url(url: str) -> str:
    """The registry URL without user info (user:password@), for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class WriterSchemas:
    """Fetches writer schemas by id and caches, per id, what `build` made of each."""

    def __init__(self, spec: SchemaRegistrySpec) -> None:
        self.url = shown_url(spec.url)
        self._settings = {"max.retries": 0, **spec.client, "url": spec.url}
        self._client: Any = None
        self._built: dict[int, Any] = {}
        self._unknown_until: dict[int, float] = {}

    def client(self) -> Any:
        """confluent-kafka's SchemaRegistryClient, made on first use (it does not pickle); a bad
        setting is a SchemaRegistryError naming kafka.schema_registry.client."""
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            try:
                self._client = SchemaRegistryClient(dict(self._settings))
            except (ValueError, TypeError) as err:
                raise SchemaRegistryError(f"kafka.schema_registry.client: {err}") from None
        return self._client

    def get(
        self, schema_id: int, build: Callable[[Any, int], Built], fmt: str | None = None
    ) -> Built:
        """What `build(schema, id)` makes of writer schema `schema_id` (a confluent-kafka Schema:
        schema_type, schema_str, references), cached. UnknownSchema if the registry does not know
        the id (or `build` rejects it), RegistryUnreachable if it does not answer."""
        found = self._built.get(schema_id)
        if found is not None:
            return found
        retry_at = self._unknown_until.get(schema_id)
        if retry_at is not None and time.monotonic() < retry_at:
            raise UnknownSchema(f"schema id {schema_id} is not in the registry at {self.url}")
        schema = self.fetch(schema_id, fmt)
        if schema is None:
            self._unknown_until[schema_id] = time.monotonic() + UNKNOWN_RETRY_S
            raise UnknownSchema(f"schema id {schema_id} is not in the registry at {self.url}")
        try:
            built = build(schema, schema_id)
        except UnknownSchema:
            self._unknown_until[schema_id] = time.monotonic() + UNKNOWN_RETRY_S
            raise
        self._unknown_until.pop(schema_id, None)
        self._built[schema_id] = built
        return built

    def fetch(self, schema_id: int, fmt: str | None = None) -> Any:
        """The registry's schema `schema_id` (None: it answered 404). RegistryUnreachable when it
        does not answer; SchemaRegistryError when it refuses (401, 403...)."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientError

        try:
            return self.client().get_schema(schema_id, fmt=fmt)
        except ClientError as err:
            status = err.http_status_code
            if status == 404:
                return None
            if status >= 500 or status in _RETRIABLE_STATUS or status < 0:
                raise RegistryUnreachable(f"{self.url} answered HTTP {status}") from None
            raise SchemaRegistryError(
                f"the schema registry at {self.url} refused kldrift: HTTP {status}, "
                f"{err.error_message} (check kafka.schema_registry.client)"
            ) from None
        except OSError as err:
            raise RegistryUnreachable(f"{self.url}: {type(err).__name__}") from None
        except Exception as err:
            if _is_transport(err):
                raise RegistryUnreachable(f"{self.url}: {type(err).__name__}") from None
            raise


def _is_transport(err: BaseException) -> bool:
    """An HTTP client's connection or timeout error (httpx2/httpcore2, confluent-kafka's)."""
    module = type(err).__module__.split(".")[0]
    return module in ("httpx", "httpx2", "httpcore", "httpcore2", "ssl", "socket", "h11")

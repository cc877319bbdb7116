"""Avro writer schemas fetched by id from a Schema Registry: Confluent's API,
``GET <registry>/schemas/ids/<id>`` -> ``{"schema": "<the schema's JSON>"}``, which
Confluent Schema Registry, Apicurio Registry (``/apis/ccompat/v7``), Karapace and
Redpanda serve.

A schema id names one schema forever, so each is fetched once per process (the driver's,
or an executor's Python worker) and kept. An id the registry does not have is an
``unknown_schema`` record (quarantined, as for an id missing from the spec's files). A
registry that cannot be reached, or answers with an error, is not the record's fault:
:class:`RegistryError` fails the batch, which a restart runs again, so nothing is
quarantined for an outage and nothing is lost.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from streaming.errors import RegistryError

__all__ = ["fetch_schema", "RegistryError"]

_ACCEPT = "application/vnd.schemaregistry.v1+json, application/json"
_TIMEOUT_S = 10.0
#: (registry, id) -> the schema's text, or None for an id the registry does not have
_KNOWN: dict[tuple[str, int], str | None] = {}


def fetch_schema(registry: str, schema_id: int) -> str | None:
    """The Avro schema (JSON text) of ``schema_id``, or None if the registry has no such
    id or it is not an Avro schema; :class:`RegistryError` if the registry fails."""
    key = (registry, schema_id)
    if key in _KNOWN:
        return _KNOWN[key]
    where = f"schema registry {registry}: GET /schemas/ids/{schema_id}"
    request = urllib.request.Request(f"{registry}/schemas/ids/{schema_id}",
                                     headers={"Accept": _ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            _KNOWN[key] = None
            return None
        raise RegistryError(f"{where}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"{where}: {reason}") from None
    except ValueError:
        raise RegistryError(f"{where}: the answer is not JSON") from None
    text = doc.get("schema") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        raise RegistryError(f"{where}: the answer has no schema")
    _KNOWN[key] = text if doc.get("schemaType", "AVRO") == "AVRO" else None
    return _KNOWN[key]

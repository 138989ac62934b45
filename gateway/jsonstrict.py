"""Strict JSON: duplicate member names and NaN/Infinity are errors (RFC 8725 2.6, RFC 7515 4).

Python's ``json`` keeps the last of duplicate members; another component reading the first would
see a different token. Rejecting both ways out keeps every reader in agreement.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps_compact", "loads_strict"]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key[:40]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def loads_strict(data: bytes | str) -> Any:
    """Parse UTF-8 JSON strictly; any problem is a ``ValueError``."""
    text = (data.decode("utf-8") if isinstance(data, bytes) else data).strip(" \t\r\n")
    try:
        value, end = _DECODER.raw_decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if end != len(text):
        raise ValueError("trailing data after the JSON value")
    return value


def dumps_compact(value: Any) -> bytes:
    """The compact serialisation the A2A samples sign: no spaces, non-ASCII kept as UTF-8.

    Any problem is a ``ValueError``: the encoder needs more stack per level than the decoder, so
    a body nested just below the recursion limit parses and then cannot be re-serialised.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return text.encode()

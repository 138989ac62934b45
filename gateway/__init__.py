"""jwksgate: a verifying reverse proxy for signed webhook pushes.

The request's path through the package, one module per concern:
``config`` (YAML -> frozen dataclasses) -> ``keys`` (JWKS fetch and cache) -> ``verify`` (pure
token decisions) -> ``replay`` (reservation stores) -> ``proxy`` (forwarding), wired together in
``app``, with ``metrics`` and ``logs`` beside them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

"""jwksgate: a verifying reverse proxy for signed webhook pushes.

One module per job, in the order a request meets them: ``listener`` (connection guard) ->
``admission`` (what is refused before any credential is read) -> ``authn`` (one authenticator per
credential kind: ``jwt`` with ``verify`` and the keys of ``jwks`` / ``jwks_fetch`` /
``jwks_cache``, ``static_token``, ``standard_webhooks``, ``provider`` with ``providers``) ->
``body`` -> ``replay`` /
``redis_store`` -> ``forward_headers`` and ``upstream`` -> ``access``. ``pipeline`` runs these steps
in order; ``errors`` holds the one reason table and ``answers`` renders the gateway's own answers;
``runtime`` is what a reload swaps, ``app`` the composition root, ``lifecycle`` / ``watch`` /
``admin`` / ``workers`` run the process. Decision modules are pure (no I/O, ``now`` as a parameter).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

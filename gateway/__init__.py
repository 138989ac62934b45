"""jwksgate: a verifying reverse proxy for signed webhook pushes.

One module per job, in the order a request meets them: ``listener`` (connection guard, parser
refusals, half-close) -> ``admission`` (what is refused before any credential is read, and the
in-flight pools) -> ``authn`` (one authenticator per credential kind, peers returning one
``Verified`` record: ``jwt`` with ``token_from``, ``verify`` and the keys of ``jwks`` /
``jwks_fetch`` / ``jwks_cache``; ``static_token``; ``standard_webhooks``; ``provider`` with
``providers``) -> ``body`` -> ``replay`` / ``redis_store`` -> ``forward_headers`` and ``upstream``
-> ``access``. ``pipeline`` runs these steps in order; ``errors`` holds the one reason table and
``answers`` renders the gateway's own answers; ``runtime`` is what a reload swaps, ``app`` the
composition root, ``bind`` / ``lifecycle`` / ``watch`` / ``admin`` / ``workers`` run the process;
``explain`` / ``explain_provider`` give the gateway's verdict offline. Decision modules are pure
(no I/O, ``now`` as a parameter).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

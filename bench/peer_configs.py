"""The configuration files of the C peers (nginx, Apache httpd + mod_auth_openidc, HAProxy), as
text. Pure: every path and port is an argument; ``bench.setups`` writes the files and starts them.

nginx gets one worker and Apache one child of the event MPM, like the single-process Python
setups; HAProxy keeps its default of one thread per CPU (with one thread it was starved on the
shared 2-core machine: about 800 req/s at 20 ms p50 with 15 % of a core busy). Every peer keeps
its upstream connections alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Policy", "apache_conf", "haproxy_cfg", "nginx_conf"]

APACHE_MODULES = Path("/usr/lib/apache2/modules")


@dataclass(frozen=True)
class Policy:
    """What a verifying peer is told to accept: the same as jwksgate's bench config."""

    issuer: str
    audience: str
    body_hash_claim: str = "request_body_sha256"
    sub_header: str = "X-Jwt-Sub"


def nginx_conf(port: int, backend_port: int, workdir: Path) -> str:
    """nginx as a plain reverse proxy: the physical floor of forwarding on this machine."""
    w = workdir
    return f"""\
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    client_max_body_size 2m;
    client_body_buffer_size 128k;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 8 64k;
        }}
    }}
}}
"""


def apache_conf(
    port: int,
    backend_port: int,
    jwks_https_url: str,
    ca_file: Path,
    workdir: Path,
    policy: Policy,
    run_as: str | None,
) -> str:
    """Apache httpd 2.4 + mod_auth_openidc as an OAuth 2.0 resource server.

    ``AuthType oauth20`` verifies the bearer JWT against ``OIDCOAuthVerifyJwksUri`` (https
    only) and checks ``exp``; iss and aud are checked with ``Require claim`` (mod_authz_user's
    authorization by claim). The module never sees the body (no body hash) and keeps no record
    of tokens seen (no replay check). Claims reach the backend as ``X-Jwt-<claim>`` headers.
    """
    m = APACHE_MODULES
    w = workdir
    user = f"User {run_as}\nGroup {run_as}\n" if run_as else ""
    prefix = policy.sub_header.removesuffix("Sub")
    return f"""\
ServerRoot {w}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {w}/apache.pid
DefaultRuntimeDir {w}
Mutex file:{w} default
ErrorLog {w}/error.log
LogLevel warn
{user}LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authn_core_module {m}/mod_authn_core.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule authz_user_module {m}/mod_authz_user.so
LoadModule proxy_module {m}/mod_proxy.so
LoadModule proxy_http_module {m}/mod_proxy_http.so
LoadModule auth_openidc_module {m}/mod_auth_openidc.so
# One child process that never exits, so that /proc sees all the CPU it spends.
StartServers 1
ServerLimit 1
ThreadsPerChild 128
ThreadLimit 128
MaxRequestWorkers 128
MinSpareThreads 1
MaxSpareThreads 128
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
LimitRequestBody 2097152
OIDCCryptoPassphrase bench-throwaway-passphrase
OIDCCABundlePath {ca_file}
OIDCOAuthSSLValidateServer On
OIDCOAuthVerifyJwksUri {jwks_https_url}
OIDCOAuthRemoteUserClaim sub
OIDCPassClaimsAs headers
OIDCClaimPrefix {prefix}
OIDCOAuthTokenExpiryClaim exp absolute mandatory
ProxyPass / http://127.0.0.1:{backend_port}/
<Location />
    AuthType oauth20
    <RequireAll>
        Require claim iss:{policy.issuer}
        Require claim aud:{policy.audience}
    </RequireAll>
</Location>
"""


def haproxy_cfg(
    port: int, backend_port: int, public_key: Path, policy: Policy, jti_entries: int
) -> str:
    """HAProxy 2.6 doing nearly jwksgate's job: ``jwt_verify`` (RS256 only, a PEM public key),
    iss/aud/exp, the body's SHA-256 against the claim (``option http-buffer-request``), a stick
    table refusing a ``jti`` seen before (409), and ``sub`` forwarded as a header."""
    claim = policy.body_hash_claim
    return f"""\
global
    tune.bufsize 163840
    tune.maxrewrite 8192
    maxconn 8192

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 30s
    option http-buffer-request
    http-reuse always

backend jti_seen
    stick-table type string len 64 size {jti_entries} expire 10m store gpc0

frontend verify
    bind 127.0.0.1:{port}
    http-request deny deny_status 401 unless {{ req.hdr(authorization) -m beg "Bearer " }}
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}
    http-request set-var(txn.sig) var(txn.bearer),jwt_verify("RS256","{public_key}")
    http-request deny deny_status 401 unless {{ var(txn.sig) -m int 1 }}
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
    http-request deny deny_status 401 unless {{ var(txn.iss) -m str {policy.issuer} }}
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
    http-request deny deny_status 401 unless {{ var(txn.aud) -m str {policy.audience} }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless {{ var(txn.exp) -m found }}
    http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int le 0 }}
    http-request set-var(txn.claimed) var(txn.bearer),jwt_payload_query('$.{claim}')
    http-request set-var(txn.actual) req.body,sha2(256),hex,lower
    http-request deny deny_status 401 unless {{ var(txn.actual),strcmp(txn.claimed) eq 0 }}
    http-request set-var(txn.jti) var(txn.bearer),jwt_payload_query('$.jti')
    http-request deny deny_status 401 unless {{ var(txn.jti) -m found }}
    http-request track-sc0 var(txn.jti) table jti_seen
    http-request return status 409 if {{ sc_inc_gpc0(0) gt 1 }}
    http-request set-header {policy.sub_header} %[var(txn.bearer),jwt_payload_query('$.sub')]
    default_backend up

backend up
    server backend 127.0.0.1:{backend_port}
"""

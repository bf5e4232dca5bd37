# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where the requests go: a :class:`Target` for a URL reachable from here (:func:`url_target`), or for a Service
reached through the Kubernetes API server's service proxy (:func:`service_target`, :func:`target_from_kubernetes`),
and the TLS context either one uses."""

from __future__ import annotations

import dataclasses
import os
import ssl
import typing as t
import urllib.parse

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError


@dataclasses.dataclass(frozen=True)
class Target:
    """Where requests go.

    ``base_url`` is the server root (paths such as ``/v1/models`` are appended). ``proxies`` is ``None`` to use
    the environment's proxy settings, else a urllib proxy mapping (empty: none). ``service`` names the Service
    (``namespace/name:port``) when requests go through the Kubernetes API server's service proxy.
    """

    base_url: str
    headers: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    proxies: t.Mapping[str, str] | None = None
    service: str | None = None
    sends_api_key: bool = False
    #: The Service object's own URL on the API server (``service`` targets).
    service_url: str | None = None

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path


def tls_context(
    validate_certs: bool = True,
    ca_path: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """An SSL context: verify against ``ca_path`` (file or directory) or the system CAs; optional client cert.

    Raises :class:`ProbeError` (``tls_error``) when a file cannot be loaded.
    """
    try:
        if ca_path and os.path.isdir(ca_path):
            context = ssl.create_default_context(capath=ca_path)
        else:
            context = ssl.create_default_context(cafile=ca_path or None)
        if not validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert:
            context.load_cert_chain(client_cert, client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError("tls_error", f"cannot load the TLS files (ca_path/client_cert/client_key): {exc}") from exc
    return context


def url_target(
    url: str,
    api_key: str | None = None,
    validate_certs: bool = True,
    ca_path: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    proxy: str | None = None,
) -> Target:
    """A target for a URL reachable from here. A trailing ``/v1`` (an OpenAI client's base URL) is dropped.

    Raises ValueError for a URL that is not http(s)://host..., :class:`ProbeError` for TLS files that do not load.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must look like http(s)://host[:port][/prefix], not {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    context = tls_context(validate_certs, ca_path, client_cert, client_key) if parts.scheme == "https" else None
    proxies = {"http": proxy, "https": proxy} if proxy else None
    return Target(base, headers, context, proxies, None, bool(api_key))


def service_target(
    api_host: str,
    namespace: str,
    name: str,
    port: str | int,
    scheme: str = "http",
    headers: t.Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | None = None,
) -> Target:
    """A target for a Service reached through the API server: ``{api_host}/api/v1/namespaces/{ns}/services/
    [https:]{name}:{port}/proxy``. ``headers`` carry the API server credentials (``Authorization``)."""
    prefix = "https:" if scheme == "https" else ""
    quote = urllib.parse.quote
    services = f"{api_host.rstrip('/')}/api/v1/namespaces/{quote(namespace, safe='')}/services/"
    base = f"{services}{prefix}{quote(name, safe='')}:{quote(str(port), safe='')}/proxy"
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    service = f"{namespace}/{name}:{port}"
    return Target(base, dict(headers or {}), ssl_context, proxies, service, False, services + quote(name, safe=""))


def target_from_kubernetes(
    configuration: t.Any,
    namespace: str,
    name: str,
    port: str | int,
    scheme: str = "http",
    extra_headers: t.Mapping[str, str] | None = None,
) -> Target:
    """A service-proxy target from a ``kubernetes.client.Configuration`` (as its config loader fills it in:
    host, CA, client certificate and key, bearer token or basic auth, proxy)."""
    headers = dict(extra_headers or {})
    token = configuration.get_api_key_with_prefix("authorization")
    if token:
        headers["Authorization"] = token
    elif getattr(configuration, "username", None) and getattr(configuration, "password", None):
        headers["Authorization"] = configuration.get_basic_auth_token()
    host = configuration.host
    context = None
    if host.startswith("https://"):
        context = tls_context(
            bool(configuration.verify_ssl),
            configuration.ssl_ca_cert,
            configuration.cert_file,
            configuration.key_file,
        )
    return service_target(host, namespace, name, port, scheme, headers, context, getattr(configuration, "proxy", None))

# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Kubernetes API as the apply engine sees it: raw requests with a deadline, answers as plain dicts.

Built on the dynamic client kubernetes.core's ``get_api_client`` returns (auth from kubeconfig, context,
``K8S_AUTH_*``, AWX credentials, exec plugins), but without its discovery: each API group/version this run
touches is looked up once (one small request), not the whole server. Every request has a deadline: what is left
of the step's ``vllm_api_timeout``; an API server that accepts and never answers ends the step at the deadline
with :class:`ApiUnavailable`, never hangs it. Private to the collection: no stability promise.
"""

from __future__ import annotations

import json
import os
import threading
import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.names import FIELD_MANAGER

# What a request may take to connect at most (the rest of the deadline is for the answer).
CONNECT_TIMEOUT = 10.0


class ApiUnavailable(Exception):
    """No answer from ``server``: refused, unreachable, TLS, or nothing within ``timeout`` s (``timed_out``)."""

    def __init__(self, cause: str, timed_out: bool = False, server: str | None = None, timeout: float = 0):
        super().__init__(cause)
        self.timed_out, self.server, self.timeout = timed_out, server, timeout


class ApiError(Exception):
    """The API server answered with an error Status: ``status`` (HTTP code), ``reason``, one-line ``message``."""

    def __init__(self, status: int, reason: str, message: str, details: dict[str, t.Any] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.details = status, reason, message, details or {}


def _status_error(exc: t.Any) -> ApiError:
    """An ApiError from the client's exception, with the message of the Status body (bounded, one line)."""
    body = getattr(exc, "body", None) or b""
    if isinstance(body, bytes):
        body = body[:65536].decode("utf-8", "replace")
    try:
        status = json.loads(body) if body else {}
    except ValueError:
        status = {}
    status = status if isinstance(status, dict) else {}
    reason = str(status.get("reason") or getattr(exc, "reason", "") or "")
    message = " ".join(str(status.get("message") or reason or f"HTTP {getattr(exc, 'status', '?')}").split())
    return ApiError(int(getattr(exc, "status", 0) or 0), reason, message[:2000], status.get("details"))


def _cause(exc: BaseException) -> str:
    """A short name for a transport failure (urllib3 nests the real one in ``reason``)."""
    inner = getattr(exc, "reason", None)
    while isinstance(inner, BaseException) and getattr(inner, "reason", None) not in (None, inner):
        inner = inner.reason
    text = str(inner if isinstance(inner, BaseException) else exc)
    # urllib3's messages repeat the pool and object reprs; the part after the last ': ' is the cause.
    return text.rsplit(": ", 1)[-1].strip(" )>'\"")[:200] or type(exc).__name__


class Kube:
    """Requests to one API server through ``dynamic`` (a ``kubernetes.dynamic.DynamicClient``)."""

    def __init__(self, dynamic: t.Any, timeout: float = 60.0, clock: t.Callable[[], float] = time.monotonic):
        self.dynamic = dynamic
        self.api_client = dynamic.client
        self.server = str(getattr(self.api_client.configuration, "host", "") or "") or None
        self.timeout = float(timeout)
        self.clock = clock
        self.deadline = clock() + self.timeout
        self._resources: dict[str, dict[str, tuple[str, bool]] | None] = {}
        _no_read_retries(self.api_client)

    def restart_deadline(self, seconds: float | None = None) -> None:
        """A new step: ``seconds`` (default the timeout) from now."""
        self.deadline = self.clock() + (self.timeout if seconds is None else seconds)

    def request(
        self,
        method: str,
        path: str,
        body: t.Any = None,
        query: list[tuple[str, t.Any]] | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
        text: bool = False,
    ) -> t.Any:
        """One request; the answer as a dict (as a str with ``text``, e.g. a log), ``None`` for 404 when
        ``missing_ok``. Raises ApiError/ApiUnavailable."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError

        left = self.deadline - self.clock()
        if left <= 0:
            raise self._unavailable("no answer in time", True)
        try:
            resp = self.dynamic.request(
                method,
                path,
                body=body,
                query_params=list(query or []),
                content_type=content_type,
                serialize=False,
                _request_timeout=(min(CONNECT_TIMEOUT, left), left),
            )
            data = resp.data
        except (DynamicApiError, ApiException) as exc:
            if missing_ok and getattr(exc, "status", None) == 404:
                return None
            raise _status_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - urllib3/ssl/socket: the transport failed, one line
            if _throttled(exc):
                raise ApiError(429, "TooManyRequests", THROTTLED) from None
            raise self._unavailable(_cause(exc), _timed_out(exc) or self.clock() >= self.deadline) from None
        if text:
            return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
        return json.loads(data) if data else {}

    def _unavailable(self, cause: str, timed_out: bool) -> ApiUnavailable:
        return ApiUnavailable(cause, timed_out, self.server, self.timeout)

    # -- where objects live
    def resources(self, api_version: str) -> dict[str, tuple[str, bool]] | None:
        """``kind -> (plural, namespaced)`` of one group/version, asked once; None when the server lacks it."""
        if api_version not in self._resources:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            listing = self.request("GET", path, missing_ok=True)
            self._resources[api_version] = (
                None
                if listing is None
                else {
                    r["kind"]: (r["name"], bool(r.get("namespaced")))
                    for r in listing.get("resources") or []
                    if "/" not in r.get("name", "/")
                }
            )
        return self._resources[api_version]

    def path(self, api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
        """The URL path of a kind (a list) or of one object; ApiError 404 when the cluster does not serve the kind."""
        kinds = self.resources(api_version)
        if not kinds or kind not in kinds:
            raise ApiError(
                404,
                "NotFound",
                f"the cluster does not serve {kind} ({api_version}): install the add-on that defines it "
                "(its CustomResourceDefinition) or turn off the option that renders it",
            )
        plural, namespaced = kinds[kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        where = f"/namespaces/{namespace}" if namespaced and namespace else ""
        return f"{base}{where}/{plural}" + (f"/{name}" if name else "")

    def object_path(self, obj: t.Mapping[str, t.Any]) -> str:
        meta = obj.get("metadata") or {}
        return self.path(str(obj.get("apiVersion")), str(obj.get("kind")), meta.get("name"), meta.get("namespace"))

    # -- the verbs the engine uses
    def get(self, obj: t.Mapping[str, t.Any]) -> dict[str, t.Any] | None:
        return self.request("GET", self.object_path(obj), missing_ok=True)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, t.Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        query += [("fieldSelector", field_selector)] if field_selector else []
        listing = self.request("GET", self.path(api_version, kind, namespace=namespace), query=query) or {}
        return listing.get("items") or []

    def apply(self, obj: t.Mapping[str, t.Any], force: bool = False, dry_run: bool = False) -> dict[str, t.Any]:
        """Server-side apply under :data:`FIELD_MANAGER` (JSON is YAML, so the body is the object as JSON)."""
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        return (
            self.request(
                "PATCH", self.object_path(obj), body=dict(obj), query=query, content_type="application/apply-patch+yaml"
            )
            or {}
        )

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int | None,
        previous: bool = False,
        timestamps: bool = False,
        limit_bytes: int | None = None,
    ) -> list[str]:
        """The last ``tail_lines`` lines of a container's log (the previous instance's with ``previous``); with
        ``tail_lines`` None, its first ``limit_bytes`` bytes (core/v1 PodLogOptions: limitBytes reads from the start
        unless tailLines is given); ``timestamps`` puts the kubelet's RFC 3339 time in front of each line."""
        query: list[tuple[str, t.Any]] = [("container", container)]
        if tail_lines is not None:
            query.append(("tailLines", tail_lines))
        if limit_bytes is not None:
            query.append(("limitBytes", limit_bytes))
        if timestamps:
            query.append(("timestamps", "true"))
        if previous:
            query.append(("previous", "true"))
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        return self.request("GET", path, query=query, text=True).splitlines()

    def per_request(self, timeout: float) -> Kube:
        """A Kube on the same client whose every request gets ``timeout`` seconds: a watch's many reads."""
        return _PerRequest(self.dynamic, timeout, self.clock)

    def delete(self, obj: t.Mapping[str, t.Any], dry_run: bool = False, propagation: str = "Background") -> bool:
        """Delete one object; False when it was already gone."""
        query = [("propagationPolicy", propagation)] + ([("dryRun", "All")] if dry_run else [])
        return self.request("DELETE", self.object_path(obj), query=query, missing_ok=True) is not None


class _PerRequest(Kube):
    def request(self, method: str, path: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self.restart_deadline()
        return super().request(method, path, *args, **kwargs)


THROTTLED = "the API server kept answering 429 Too Many Requests (it asked the client to slow down), also after retries"


def _throttled(exc: BaseException) -> bool:
    """urllib3 gave up after the Retry-After retries of 429 answers: throttling (a busy or just-started API server),
    not an unreachable one."""
    return "too many 429 error responses" in str(getattr(exc, "reason", "") or exc)


def _timed_out(exc: BaseException) -> bool:
    return "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower()


def connect(auth: t.Mapping[str, t.Any], timeout: float) -> Kube:
    """A :class:`Kube` for kubernetes.core's connection options (``kubeconfig``, ``context``, ``host``, ... and the
    ``K8S_AUTH_*`` variables, as its modules read them). Making the client may ask the server its version (when
    its discovery cache is cold), a request kubernetes.core sends without a timeout: it runs in a thread given
    ``timeout`` seconds; one that never returns is left behind (a daemon, gone with the process)."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client

    made: dict[str, t.Any] = {}

    def make() -> None:
        try:
            made["client"] = get_api_client(**{k: v for k, v in auth.items() if v is not None}).client
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread below
            made["error"] = exc

    worker = threading.Thread(target=make, name="kubernetes-client", daemon=True)
    worker.start()
    worker.join(timeout)
    server = None if "client" in made else api_server(auth.get("kubeconfig"), auth.get("context"), auth.get("host"))
    if worker.is_alive():
        raise ApiUnavailable("no answer in time", True, server, timeout)
    if "error" in made:
        import urllib3

        exc = made["error"]
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            raise ApiUnavailable(_cause(exc), _timed_out(exc), server, timeout) from None
        raise exc
    return Kube(made["client"], timeout=timeout)


def unreachable(exc: ApiUnavailable) -> str:
    """The one line for a module that only reads when the API server does not answer."""
    at = f" {exc.server}" if exc.server else ""
    return (
        f"cannot reach the Kubernetes API server{at} ({'no answer in time' if exc.timed_out else exc}): check "
        "that the cluster is up and that the kubeconfig and context point at it"
    )


def api_server(kubeconfig: t.Any = None, context: str | None = None, host: str | None = None) -> str | None:
    """The server URL the connection options point at (where kubernetes.core looks: ``host``/K8S_AUTH_HOST, then
    ``context`` in ``kubeconfig``, K8S_AUTH_KUBECONFIG, KUBECONFIG, ~/.kube/config); None when it cannot tell."""
    import yaml

    host = host or (None if kubeconfig else os.environ.get("K8S_AUTH_HOST"))
    if host:
        return host
    try:
        if isinstance(kubeconfig, dict):
            config = kubeconfig
        else:
            path = (
                kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG") or os.environ.get("KUBECONFIG") or "~/.kube/config"
            )
            with open(os.path.expanduser(str(path).split(os.pathsep, maxsplit=1)[0]), encoding="utf-8") as handle:
                config = yaml.safe_load(handle) or {}
        name = context or os.environ.get("K8S_AUTH_CONTEXT") or config.get("current-context")
        cluster = next(c["context"]["cluster"] for c in config.get("contexts") or [] if c.get("name") == name)
        return next(c["cluster"]["server"] for c in config.get("clusters") or [] if c.get("name") == cluster)
    except (OSError, ValueError, KeyError, TypeError, StopIteration, yaml.YAMLError):
        return None


def _no_read_retries(api_client: t.Any) -> None:
    """urllib3 retries an idempotent request that timed out three times by default, which would stretch one
    deadline to four; connection failures are still retried (they are fast)."""
    try:
        import urllib3

        pool = api_client.rest_client.pool_manager
        pool.connection_pool_kw["retries"] = urllib3.util.Retry(total=3, connect=3, read=0, redirect=0, status=0)
    except (AttributeError, ImportError, TypeError):
        pass

# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One probe run as the checks see it: the target, the settings, what earlier checks found (:class:`_Findings`),
and requests whose unexpected answers become a :class:`ProbeError` with the reason that fits (vLLM's own answers
told from a gateway's or the Kubernetes API server's)."""

from __future__ import annotations

import dataclasses
import http
import re
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.errors import ProbeError
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.settings import ProbeSettings
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.target import Target
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe.transport import (
    _Answer,
    _Client,
    _error_body,
    _is_kubernetes_status,
)

# Answers that mean "up, but not serving yet": a gateway or the API server's service proxy in front of a pod
# that is not ready (503 "no endpoints available for service"), or vLLM itself with a dead engine.
_LOADING_STATUS = frozenset((502, 503, 504))


def _release(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a vLLM version string such as ``0.9.0.1`` or ``0.33.0+cu130``; None when unknown."""
    match = re.match(r"^v?(\d+)\.(\d+)", str(version or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclasses.dataclass
class _Findings:
    """What the checks found so far; later checks use it and the result reports it."""

    model: str | None = None
    models: list[str] = dataclasses.field(default_factory=list)
    version: str | None = None
    waited_ms: float = 0.0
    ttft_ms: float | None = None
    inter_token_ms: float | None = None
    load: dict[str, t.Any] | None = None
    #: Per check, in the order they ran: ``{"passed", "reason", "msg", ...}``.
    checks: dict[str, dict[str, t.Any]] = dataclasses.field(default_factory=dict)


class _Session:
    """The target, the settings and the findings of one probe run, and its requests."""

    def __init__(self, target: Target, settings: ProbeSettings) -> None:
        self.target = target
        self.settings = settings
        self.client = _Client(target)
        self.found = _Findings(model=settings.model)

    def get(self, path: str, timeout: float | None = None) -> _Answer:
        return self.client.call("GET", path, None, self.settings.timeout if timeout is None else timeout)

    def post(self, path: str, payload: dict[str, t.Any]) -> _Answer:
        return self.client.call("POST", path, payload, self.settings.timeout)

    def status_error(self, answer: _Answer) -> ProbeError:
        """The ProbeError for an unexpected status, telling vLLM's answers from the API server's own."""
        message, doc = _error_body(answer.body)
        status = answer.status
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "HTTP status"
        message = message or "(empty body)"
        where = f"{status} {phrase} on {answer.what}"
        from_kubernetes = _is_kubernetes_status(doc)
        details = {"status": status, "error": message}
        if status == 401:
            if from_kubernetes:
                text = "the Kubernetes API server rejected the credentials: check kubeconfig, context or api_key"
            elif self.target.service:
                text = (
                    "vLLM wants an API key, and the API server's service proxy drops the Authorization header: "
                    "probe a server started with --api-key through url (an ingress or a port-forward)"
                )
            elif self.target.sends_api_key:
                text = "the API key was rejected: api_key must equal the server's --api-key (VLLM_API_KEY)"
            else:
                text = "the server requires an API key (vLLM --api-key / VLLM_API_KEY): set api_key"
            return ProbeError("unauthorized", f"{where}: {text}", **details)
        if status == 403:
            text = message
            if from_kubernetes:
                text += " (the Kubernetes user needs the verb get on services/proxy in that namespace)"
            return ProbeError("forbidden", f"{where}: {text}", **details)
        if status == 404 and from_kubernetes and self.service_exists():
            # The API server says "not found" for a Service whose endpoints are not recorded yet, too.
            return ProbeError(
                "not_ready", f"{where}: {message} (the Service exists but has no endpoints yet)", **details
            )
        if status == 404 and from_kubernetes:
            return ProbeError(
                "service_not_found",
                f"404 from the Kubernetes API server on {answer.what}: {message}; check service name and namespace",
                **details,
            )
        if self.names_missing_model(status, doc, message):
            served = ", ".join(self.found.models) if self.found.models else "see GET /v1/models"
            return ProbeError("model_not_found", f"{where}: {message} Set model to a served id ({served})", **details)
        if status == 400 and "requires --tool-call-parser" in message:
            # vLLM 0.33 (renderers/online_renderer.py): required and named tool choice go through the parser too.
            return ProbeError(
                "tool_calling_disabled",
                f"{where}: {message}; start vLLM with --tool-call-parser=<parser> (mistral for Mistral models)",
                **details,
            )
        if status == 400 and "enable-auto-tool-choice" in message:
            # Before 0.33, required and named tool choice use guided decoding and need no parser.
            older = _release(self.found.version) is not None and _release(self.found.version) < (0, 33)
            return ProbeError(
                "tool_calling_disabled",
                f"{where}: {message}; start vLLM with --enable-auto-tool-choice --tool-call-parser=<parser> "
                "(mistral for Mistral models)" + (", or probe with tool_choice: required" if older else ""),
                **details,
            )
        if status == 500 and message == "(empty body)" and not self.target.service:
            # vLLM answers every request a bare 500 once its engine died (0.9.0 entrypoints/launcher.py handlers).
            return ProbeError(
                "engine_dead",
                f"{where} with an empty body: vLLM's answer once its engine died; the pod's log says why "
                "(kubectl logs, --previous after a restart)",
                **details,
            )
        if status in _LOADING_STATUS:
            return ProbeError("not_ready", f"{where}: {message} (the server is up but not serving yet)", **details)
        return ProbeError("http_error", f"{where}: {message}", **details)

    def names_missing_model(self, status: int, doc: dict[str, t.Any], message: str) -> bool:
        """Whether an error answer says the requested model is not served: vLLM's 404 NotFoundError (flat before
        0.10.1, nested under "error" after), or another server's 400/404/422 that names the model."""
        error = doc.get("error") if isinstance(doc.get("error"), dict) else doc
        if status == 404 and (error.get("type") == "NotFoundError" or "does not exist" in message):
            return True
        if status in (400, 404, 422) and self.found.model and str(self.found.model) in message:
            # transformers serve 5.17: 400 "Server is pinned to 'X'; requested 'Y'." (seen by tests/device/run.sh).
            found = r"not (found|served|available|supported|loaded)|does not exist|unknown|pinned to"
            return bool(re.search(found, message, re.I))
        return False

    def service_exists(self) -> bool:
        """Whether the API server has the target's Service object (False when it cannot tell)."""
        if not self.target.service_url:
            return False
        try:
            return self.client.call("GET", self.target.service_url, None, self.settings.timeout).status == 200
        except ProbeError:
            return False

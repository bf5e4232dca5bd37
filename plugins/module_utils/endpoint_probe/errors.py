# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""How a check fails: the machine-readable reasons (:data:`REASONS`) and :class:`ProbeError`, which carries one."""

from __future__ import annotations

import typing as t

# Machine-readable reasons a failed check carries.
REASONS = (
    "connection_refused",  # nothing listens at host:port
    "dns_failure",  # the host name does not resolve
    "tls_error",  # certificate verify failed, handshake failed, or the TLS files cannot be loaded
    "connection_error",  # connection reset/closed without an HTTP answer (often http vs https)
    "not_ready",  # still loading (503, or no answer) when wait_timeout ran out
    "engine_dead",  # /health 500 (vLLM 0.10) or an empty 503 at the end of the wait (0.11+): the engine died
    "timeout",  # a request got no (complete) answer within timeout
    "unauthorized",  # 401: missing or wrong API key (or Kubernetes credentials)
    "forbidden",  # 403: the Kubernetes user may not use services/proxy
    "service_not_found",  # 404 from the API server: no such Service
    "model_not_found",  # the expected model is not served (listed, or a 404 for it)
    "model_ambiguous",  # several models served and none named
    "tool_calling_disabled",  # tool_choice refused: server lacks --enable-auto-tool-choice / --tool-call-parser
    "no_tool_call",  # a well-formed answer without a tool call
    "no_metrics_endpoint",  # GET /metrics is 404: the server exposes no Prometheus metrics
    "malformed_response",  # an answer does not have the documented shape
    "redirect",  # a redirect that loops (or has no Location): the URL is not the server's own
    "http_error",  # any other unexpected HTTP status
    "not_run",  # an earlier failure made this check impossible
)


class ProbeError(Exception):
    """A check failed: ``reason`` (one of :data:`REASONS`), one actionable line, and structured details."""

    def __init__(self, reason: str, message: str, **details: t.Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details

#!/usr/bin/python
# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# Ansible modules put their documentation before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
module: vllm_endpoint_probe
short_description: Prove that a vLLM endpoint serves its model, measure it, or say in one line why not
version_added: 0.1.0
description:
  - Waits until a vLLM OpenAI-compatible server answers C(/health) (polling through refused connections, 502, 503
    and 504 answers, and a port that accepts but stays silent while the model loads), then runs the selected
    checks and reports what it measured as data.
  - "Checks: C(health) (C(GET /health) is 200), C(models) (C(GET /v1/models) lists the expected model id),
    C(version) (C(GET /version), when the server has it), C(chat) (a short non-streamed chat completion carries
    content, a C(finish_reason) and C(usage) counts), C(tool_call) (a request with one tool definition gets a
    C(tool_calls) entry of C(type: function), naming the requested function, whose C(arguments) are a JSON
    string that parses to an object), C(stream) (a streamed chat completion: time to first token and time per
    output token, server-sent events ending in C(data: [DONE])) and C(metrics) (C(GET /metrics) exposes
    C(vllm:) series such as C(vllm:num_requests_running))."
  - With O(load), it also sends O(load.requests) streamed chat completions, O(load.concurrency) at a time, and
    reports latency and time-to-first-token percentiles, output tokens per second and the errors.
  - The server is reached at O(url) from where the module runs, or, for a Service without an ingress, through
    the Kubernetes API server's service proxy (O(service), authenticated like M(kubernetes.core.k8s)).
  - Failures are specific and distinguishable by RV(reason) - connection refused, DNS failure, TLS error, 401
    (missing or wrong API key), 404 model not found, still loading at O(wait_timeout), malformed response (saying
    what was malformed) - and the message names the first failing check and what to do.
author:
  - llmops.vllm maintainers (@llmops-vllm)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads (the requests it sends generate text and change nothing), so check mode runs
        every check as usual.
  diff_mode:
    support: none
    details:
      - The module changes nothing, so there is no diff.
  platform:
    platforms: all
  idempotent:
    description: The module never changes anything; C(changed) is always false.
    support: full
options:
  url:
    description:
      - Base URL of the server, for example V(http://127.0.0.1:8080) or V(https://vllm.example.com/mistral).
      - A trailing V(/v1) (an OpenAI client's base URL) is accepted and dropped.
      - Mutually exclusive with O(service); one of them is required.
    type: str
  service:
    description:
      - A Service in the cluster, reached through the Kubernetes API server's service proxy
        (C({host}/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy/...)), for Services without an
        ingress. No port-forward and no route from here to the pods is needed.
      - The connection options (O(kubeconfig), O(context), O(host), O(api_key), O(validate_certs), O(ca_cert),
        O(client_cert), O(client_key), O(proxy), ...) then apply to the API server, as in M(kubernetes.core.k8s).
      - The user needs the verb C(get) on C(services/proxy) in the namespace.
      - While no pod of the Service is ready the API server answers 503 (no endpoints available for service),
        which counts as not ready yet.
      - The API server does not pass an C(Authorization) header on to the Service, so a vLLM started with
        C(--api-key) answers 401 through this route; probe such a server by O(url).
      - Mutually exclusive with O(url).
    type: dict
    suboptions:
      name:
        description: Name of the Service.
        type: str
        required: true
      namespace:
        description: Namespace of the Service.
        type: str
        default: default
      port:
        description: Port of the Service, by number or by name.
        type: str
        default: "8080"
      scheme:
        description: Whether the Service speaks V(http) or V(https).
        type: str
        choices: [http, https]
        default: http
  model:
    description:
      - The model id the server must serve (its C(--served-model-name), else its C(--model) path, for example
        V(/ram-models/mistral-7b-v0-3)).
      - When not set, the only model C(GET /v1/models) lists (LoRA adapters aside) is probed; several models and
        no O(model) is a failure with reason C(model_ambiguous).
    type: str
  api_key:
    description:
      - "With O(url), the key the server was started with (C(vllm serve --api-key) or C(VLLM_API_KEY)), sent as
        C(Authorization: Bearer <api_key>)."
      - With O(service), the token for the Kubernetes API server, as in M(kubernetes.core.k8s). Can also be
        specified via the E(K8S_AUTH_API_KEY) environment variable (with O(service) only).
    type: str
  validate_certs:
    description:
      - Whether to verify the TLS certificate of the server the module connects to (O(url), or with O(service)
        the API server; there also via E(K8S_AUTH_VERIFY_SSL)).
      - Defaults to V(true) with O(url).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description:
      - CA certificate (a PEM file, or with O(url) also a directory of them) to verify the server certificate
        with, instead of the system's CAs. With O(service) it is the API server's CA (also
        E(K8S_AUTH_SSL_CA_CERT)).
    type: path
    aliases: [ssl_ca_cert, ca_path]
  client_cert:
    description:
      - Client certificate (PEM) for servers that require one (O(url)), or for the API server (O(service), also
        E(K8S_AUTH_CERT_FILE)).
    type: path
    aliases: [cert_file]
  client_key:
    description:
      - Key of O(client_cert), when the certificate file does not hold it.
    type: path
    aliases: [key_file]
  proxy:
    description:
      - URL of an HTTP proxy to connect through. With O(url) and no O(proxy), the usual environment variables
        (E(HTTP_PROXY), E(HTTPS_PROXY), E(NO_PROXY)) apply; with O(service) they do not, as in
        M(kubernetes.core.k8s).
    type: str
  checks:
    description:
      - The checks to run, always in the order listed in the choices.
      - C(health) always runs first, because it is the readiness signal; C(models) also runs when O(model) is
        not set and a later check needs the model id.
    type: list
    elements: str
    choices: [health, models, version, chat, tool_call, stream, metrics]
    default: [health, models, version, chat, tool_call, stream]
  prompt:
    description:
      - The user message of the C(chat) and C(stream) checks and of O(load).
    type: str
    default: "In one short sentence: what is the capital of France?"
  max_tokens:
    description:
      - Most tokens the C(chat) and C(stream) checks ask for. The C(tool_call) check asks for at least 128, the
        room a call's JSON needs.
    type: int
    default: 32
  tool_choice:
    description:
      - The C(tool_choice) of the C(tool_call) check.
      - V(auto) is what clients send and what C(--enable-auto-tool-choice --tool-call-parser=...) serves; it
        proves the parser turns the model's output into C(tool_calls). A server started without those flags
        fails with reason C(tool_calling_disabled); a well-formed answer in text fails with C(no_tool_call).
      - V(required) and V(named) (the tool by name) force a call. vLLM 0.8.3 to 0.32 forces it with guided
        decoding (no parser needed; C(finish_reason) C(stop), ids C(chatcmpl-tool-...)); from 0.33 both go through
        the tool parser, and a server without C(--tool-call-parser) refuses them (C(tool_calling_disabled)).
    type: str
    choices: [auto, required, named]
    default: auto
  timeout:
    description:
      - Seconds one request may take, a whole streamed answer included.
    type: float
    default: 60
  wait_timeout:
    description:
      - Seconds to keep polling C(/health) while the server is not serving yet (connection refused, 502, 503,
        504, no answer). A server that never becomes ready fails when this runs out, with the last answer seen.
      - V(0) looks once.
    type: float
    default: 0
  poll_interval:
    description:
      - Seconds between two readiness polls.
    type: float
    default: 1.0
  load:
    description:
      - Also run a small load test after the checks and report its statistics in RV(load).
      - Each request is a streamed chat completion of O(prompt) on its own connection, so latencies include
        connection (and TLS) set-up.
    type: dict
    suboptions:
      requests:
        description: Number of requests.
        type: int
        default: 20
      concurrency:
        description: Requests in flight at once.
        type: int
        default: 4
      max_tokens:
        description: Most tokens each request asks for.
        type: int
        default: 64
      max_errors:
        description: Failed requests tolerated before the C(load) check fails.
        type: int
        default: 0
requirements:
  - kubernetes >= 24.2.0 (with O(service) only)
notes:
  - The options O(kubeconfig), O(context), O(host), O(username), O(password), O(no_proxy), O(proxy_headers),
    O(persist_config), O(impersonate_user) and O(impersonate_groups) apply with O(service) only and are ignored
    with O(url), so C(module_defaults) for the C(group/llmops.vllm.vllm) action group can set them.
  - O(impersonate_groups) is not supported.
  - Latencies are measured from this machine; with O(service) they include the hop through the API server.
seealso:
  - module: llmops.vllm.vllm_wait
  - module: kubernetes.core.k8s
  - name: vLLM OpenAI-compatible server
    description: The API this module checks.
    link: https://docs.vllm.ai/en/v0.9.0/serving/openai_compatible_server.html
  - name: vLLM tool calling
    description: Auto tool choice, tool parsers and forced tool calls.
    link: https://docs.vllm.ai/en/v0.9.0/features/tool_calling.html
"""

EXAMPLES = r"""
- name: Prove the endpoint serves (default checks)
  llmops.vllm.vllm_endpoint_probe:
    url: http://mistral.example.internal:8080

- name: Wait up to 15 minutes for a cold model load, then check a server behind an API key and a private CA
  llmops.vllm.vllm_endpoint_probe:
    url: https://vllm.example.com
    api_key: "{{ vllm_api_key }}"
    ca_path: /etc/pki/internal-ca.pem
    model: /ram-models/mistral-7b-v0-3
    wait_timeout: 900
    poll_interval: 5

- name: Probe an in-cluster Service without an ingress, through the API server
  llmops.vllm.vllm_endpoint_probe:
    service:
      name: mistral
      namespace: vllm
      port: 8080
    checks: [health, models, chat, tool_call, stream, metrics]
    wait_timeout: 600
  register: probe

- name: Show what it measured
  ansible.builtin.debug:
    msg: >-
      {{ probe.model }} (vLLM {{ probe.version }}) ready after {{ probe.waited_ms }} ms,
      time to first token {{ probe.ttft_ms }} ms, {{ probe.inter_token_ms }} ms per token

- name: A small load test; fail the play when p95 latency is over 2 s
  llmops.vllm.vllm_endpoint_probe:
    url: http://127.0.0.1:8080
    checks: [health]
    load:
      requests: 50
      concurrency: 8
      max_tokens: 64
  register: bench

- name: Check the latency budget
  ansible.builtin.assert:
    that: bench.load.latency_ms.p95 < 2000
    fail_msg: "p95 {{ bench.load.latency_ms.p95 }} ms, {{ bench.load.output_tokens_per_s }} output tokens/s"

- name: Tell a missing API key from a model that is not served
  llmops.vllm.vllm_endpoint_probe:
    url: http://127.0.0.1:8080
    model: mistral
  register: probe
  failed_when: probe.reason | default('') not in ['', 'model_not_found']
"""

RETURN = r"""
url:
  description: The base URL requests went to (with O(service), the API server's service proxy URL).
  returned: always
  type: str
  sample: http://127.0.0.1:8080
service:
  description: The Service probed, as C(namespace/name:port), or null with O(url).
  returned: always
  type: str
  sample: vllm/mistral:8080
model:
  description: The model id probed (O(model), or the one the server lists), or null when it could not be told.
  returned: always
  type: str
  sample: /ram-models/mistral-7b-v0-3
models:
  description: The model ids C(GET /v1/models) lists; empty when the C(models) check did not run or failed.
  returned: always
  type: list
  elements: str
  sample: [/ram-models/mistral-7b-v0-3]
version:
  description: The vLLM version C(GET /version) reports, or null (check not run, or no such endpoint).
  returned: always
  type: str
  sample: 0.9.0
waited_ms:
  description: Milliseconds the readiness wait took before C(/health) answered 200 (0 when it answered at once).
  returned: always
  type: float
  sample: 41250.3
ttft_ms:
  description: Time to first token of the C(stream) check, in milliseconds, or null when it did not pass.
  returned: always
  type: float
  sample: 48.7
inter_token_ms:
  description:
    - Time per output token after the first in the C(stream) check, in milliseconds (the stream's duration after
      its first token divided by the completion tokens after the first), or null.
  returned: always
  type: float
  sample: 11.9
load:
  description: Load statistics when O(load) is set, else null. Latencies are in milliseconds.
  returned: always
  type: dict
  contains:
    requests:
      description: Requests sent.
      type: int
    concurrency:
      description: Requests in flight at once.
      type: int
    max_tokens:
      description: Most tokens each request asked for.
      type: int
    succeeded:
      description: Requests that completed with content.
      type: int
    errors:
      description: Requests that failed.
      type: int
    errors_by_reason:
      description: Failed requests by RV(reason).
      type: dict
    first_error:
      description: The message of the first failed request, or null.
      type: str
    duration_ms:
      description: Wall time of the whole load test.
      type: float
    latency_ms:
      description: Request latency percentiles (C(p50), C(p95), C(p99)) over succeeded requests.
      type: dict
    ttft_ms:
      description: Time-to-first-token percentiles (C(p50), C(p95), C(p99)).
      type: dict
    inter_token_ms:
      description: Time-per-output-token percentiles (C(p50), C(p95), C(p99)).
      type: dict
    output_tokens:
      description: Completion tokens over all succeeded requests (as the server's C(usage) counts them).
      type: int
    output_tokens_per_s:
      description: RV(load.output_tokens) divided by the wall time of the load test.
      type: float
    requests_per_s:
      description: Succeeded requests divided by the wall time of the load test.
      type: float
  sample:
    requests: 20
    concurrency: 4
    max_tokens: 64
    succeeded: 20
    errors: 0
    errors_by_reason: {}
    first_error: null
    duration_ms: 5120.4
    latency_ms: {p50: 980.2, p95: 1210.5, p99: 1302.1}
    ttft_ms: {p50: 61.3, p95: 140.2, p99: 171.0}
    inter_token_ms: {p50: 14.2, p95: 16.9, p99: 17.3}
    output_tokens: 1280
    output_tokens_per_s: 250.0
    requests_per_s: 3.91
checks:
  description:
    - One entry per check that ran, in the order run, plus C(load) with O(load).
    - Every entry has C(passed) (bool), C(reason) (null when passed, else as RV(reason), or C(not_run) when an
      earlier failure made the check impossible), C(msg) (when failed) and, for checks that reached the server,
      C(status) (HTTP status) and C(latency_ms).
    - C(health) adds C(waited_ms) and C(attempts) (and C(last_seen) when the wait ran out); C(models) adds
      C(models) and C(max_model_len); C(version) adds C(present) and C(version); C(chat) adds C(content) (up to
      200 characters), C(finish_reason), C(usage) and C(output_tokens_per_s); C(tool_call) adds C(tool_choice),
      C(finish_reason), C(tool_calls) (count), C(id), C(name) and C(arguments) (parsed); C(stream) adds
      C(ttft_ms), C(inter_token_ms), C(events), C(completion_tokens), C(finish_reason), C(done_marker) (whether
      the stream ended with the C([DONE]) event; a stream whose last event carries a C(finish_reason) is complete
      without it, as from C(transformers serve) and several gateways) and C(content);
      C(metrics) adds C(series) (number of C(vllm:) series) and C(values) (C(num_requests_running),
      C(num_requests_waiting) and the cache usage, summed over label sets); C(load) adds C(succeeded),
      C(errors) and C(output_tokens_per_s), its C(latency_ms) being the median.
  returned: always
  type: dict
  sample:
    health: {passed: true, reason: null, status: 200, latency_ms: 2.1, waited_ms: 0.0, attempts: 1}
    models: {passed: true, reason: null, status: 200, latency_ms: 3.4, models: [/ram-models/mistral-7b-v0-3],
             max_model_len: 2048}
    chat: {passed: true, reason: null, status: 200, latency_ms: 412.5, content: The capital of France is Paris.,
           finish_reason: stop, usage: {prompt_tokens: 15, completion_tokens: 8, total_tokens: 23},
           output_tokens_per_s: 19.4}
    tool_call: {passed: false, reason: no_tool_call, status: 200,
                msg: "POST /v1/chat/completions answered without a tool call (finish_reason 'stop', ..."}
elapsed_ms:
  description: Milliseconds all checks took, the readiness wait included.
  returned: always
  type: float
  sample: 1630.2
failed_check:
  description: The first check that failed.
  returned: failure
  type: str
  sample: tool_call
reason:
  description:
    - Machine-readable cause of the failure, the first failing check's.
    - One of C(connection_refused) (nothing listens; a loading vLLM refuses connections until its model is
      loaded, so after O(wait_timeout) it means still loading or not running), C(dns_failure), C(tls_error)
      (certificate verify failed, handshake failed, or TLS files that do not load), C(connection_error) (closed
      without an HTTP answer, often http against https), C(not_ready) (a 502/503/504 answer, from a gateway or the
      service proxy in front of a loading server, or an accepted connection without an answer, when
      O(wait_timeout) ran out), C(engine_dead) (the vLLM engine died, so C(/health) answers 500 on 0.10, or a
      request a bare 500 on 0.9), C(timeout) (no answer within O(timeout)), C(unauthorized) (401), C(forbidden)
      (403 from the API server), C(service_not_found), C(model_not_found) (not listed, vLLM's 404, or another
      server's 400 naming the model; the checks that need the model are then C(not_run)), C(model_ambiguous),
      C(tool_calling_disabled) (the server refuses the tool choice, without C(--enable-auto-tool-choice) or
      C(--tool-call-parser)), C(no_tool_call) (a well-formed answer without a tool call), C(no_metrics_endpoint)
      (C(/metrics) is 404), C(malformed_response), C(redirect) (redirects that loop or lack a Location, from a proxy in
      front of the server), C(http_error) (any other status);
      before any request, C(invalid_option), C(missing_library) or C(kubeconfig_error).
  returned: failure
  type: str
  sample: unauthorized
"""

import copy
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.llmops.vllm.plugins.module_utils.endpoint_probe import (
    CHECKS,
    DEFAULT_CHECKS,
    DEFAULT_PROMPT,
    TOOL_CHOICES,
    LoadSettings,
    ProbeError,
    ProbeSettings,
    Target,
    probe,
    target_from_kubernetes,
    url_target,
)


def argspec() -> dict:
    """Options: kubernetes.core's connection options (they describe the connection to O(url) too) plus the
    probe's own."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec["ca_cert"]["aliases"] = ["ssl_ca_cert", "ca_path"]
    spec.update(
        url=dict(type="str"),
        service=dict(
            type="dict",
            options=dict(
                name=dict(type="str", required=True),
                namespace=dict(type="str", default="default"),
                port=dict(type="str", default="8080"),
                scheme=dict(type="str", choices=["http", "https"], default="http"),
            ),
        ),
        model=dict(type="str"),
        checks=dict(type="list", elements="str", choices=list(CHECKS), default=list(DEFAULT_CHECKS)),
        prompt=dict(type="str", default=DEFAULT_PROMPT),
        # A count of tokens, not a secret.
        max_tokens=dict(type="int", default=32, no_log=False),
        tool_choice=dict(type="str", choices=list(TOOL_CHOICES), default="auto"),
        timeout=dict(type="float", default=60),
        wait_timeout=dict(type="float", default=0),
        poll_interval=dict(type="float", default=1.0),
        load=dict(
            type="dict",
            options=dict(
                requests=dict(type="int", default=20),
                concurrency=dict(type="int", default=4),
                max_tokens=dict(type="int", default=64, no_log=False),
                max_errors=dict(type="int", default=0),
            ),
        ),
    )
    return spec


def _invalid(params: dict) -> str | None:
    """The first option value that cannot work, as a message."""
    load = params["load"] or {}
    rules = (
        (params["timeout"] > 0, "timeout must be above 0"),
        (params["wait_timeout"] >= 0, "wait_timeout must be 0 or more"),
        (params["poll_interval"] > 0, "poll_interval must be above 0"),
        (params["max_tokens"] >= 1, "max_tokens must be 1 or more"),
        (load.get("requests", 1) >= 1, "load.requests must be 1 or more"),
        (load.get("concurrency", 1) >= 1, "load.concurrency must be 1 or more"),
        (load.get("max_tokens", 1) >= 1, "load.max_tokens must be 1 or more"),
        (load.get("max_errors", 0) >= 0, "load.max_errors must be 0 or more"),
    )
    return next((text for ok, text in rules if not ok), None)


def _service_target(module: AnsibleModule) -> Target:
    """The API server's service proxy for O(service), with kubernetes.core's handling of the auth options
    (parameters, K8S_AUTH_* variables, kubeconfig or in-cluster config) and no discovery round trip."""
    try:
        import kubernetes  # noqa: F401  (kubernetes.core's helpers need it; they hide its absence)
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (
            _create_auth_spec,
            _create_configuration,
            _create_headers,
        )
    except ImportError:
        module.fail_json(
            msg=missing_required_lib("kubernetes", reason="to reach a Service through the Kubernetes API server"),
            reason="missing_library",
            exception=traceback.format_exc(),
        )
    headers = _create_headers(module)
    if headers.pop("Impersonate-Group", None):
        module.fail_json(msg="impersonate_groups is not supported by vllm_endpoint_probe", reason="invalid_option")
    try:
        configuration = _create_configuration(_create_auth_spec(module))
    except Exception as exc:  # kubernetes.config.ConfigException, a missing or unreadable file, ...
        module.fail_json(msg=f"cannot load the Kubernetes client configuration: {exc}", reason="kubeconfig_error")
    service = module.params["service"]
    return target_from_kubernetes(
        configuration, service["namespace"], service["name"], service["port"], service["scheme"], headers
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argspec(),
        supports_check_mode=True,
        mutually_exclusive=[("url", "service")],
        required_one_of=[("url", "service")],
    )
    params = module.params
    problem = _invalid(params)
    if problem:
        module.fail_json(msg=problem, reason="invalid_option")
    try:
        if params["url"]:
            target = url_target(
                params["url"],
                api_key=params["api_key"],
                validate_certs=params["validate_certs"] is not False,
                ca_path=params["ca_cert"],
                client_cert=params["client_cert"],
                client_key=params["client_key"],
                proxy=params["proxy"],
            )
        else:
            target = _service_target(module)
    except ValueError as exc:
        module.fail_json(msg=str(exc), reason="invalid_option")
    except ProbeError as exc:
        module.fail_json(msg=exc.message, reason=exc.reason)
    load = params["load"]
    settings = ProbeSettings(
        checks=tuple(params["checks"]),
        model=params["model"],
        prompt=params["prompt"],
        max_tokens=params["max_tokens"],
        tool_choice=params["tool_choice"],
        timeout=params["timeout"],
        wait_timeout=params["wait_timeout"],
        poll_interval=params["poll_interval"],
        load=LoadSettings(**load) if load else None,
    )
    result = probe(target, settings)
    if result.pop("failed"):
        module.fail_json(changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

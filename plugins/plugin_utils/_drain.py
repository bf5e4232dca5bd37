# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""How a server pod ends without dropping a request: per vLLM release, what its SIGTERM does and what we render.

Every rollout, scale-in, node drain and Karpenter consolidation ends a pod the same way: the endpoint is removed from
the Service while the kubelet runs the preStop hook, then the container gets SIGTERM, and SIGKILL when
``terminationGracePeriodSeconds`` (which the preStop counts against) has passed. What vLLM does on SIGTERM
(docs/vllm-shutdown.md has the table, each line citing the release's source):

- **0.18.0 and later** have ``--shutdown-timeout`` (integer seconds, default 0; 0.18.0 ``engine/arg_utils.py``,
  ``config/vllm.py`` ``shutdown_timeout``). At 0 every request in flight ends at once with ``finish_reason: "abort"``
  (0.23.0 logs ``stopping engine client mode=abort timeout=0s``); above 0 they run to their end within the timeout
  (``mode=drain``). Until 0.26 the listening socket closes at once all the same (uvicorn's own handler fires beside
  vLLM's, 0.18.0 ``entrypoints/launcher.py``), so the endpoint must be out of the Service *before* the signal.
- **Before 0.18.0** nothing drains: the engine is stopped, the output handler cancelled, and requests in flight get no
  more tokens and no error (0.9.0 ``v1/engine/async_llm.py`` 195-202, 312-315, 407-409). The preStop therefore waits
  until ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (the same names in every release, 0.9.0
  ``v1/metrics/loggers.py`` 170-175) read 0 on ``/metrics``, at most ``shutdown_timeout`` seconds.

What is rendered: ``--shutdown-timeout`` where the release has it; a preStop that first keeps serving for
``prestop_seconds`` while kube-proxy and load balancers drop the endpoint (KServe waits 15 s, kserve/kserve#5496),
a ``sleep`` action where vLLM drains itself and a wait on the metrics where it does not; and a grace period of
preStop + shutdown timeout + a margin for the HTTP teardown and the engine's kill (``v1/utils.py`` shutdown allows
5 s), unless ``termination_grace_seconds`` is set (the preflight refuses one shorter than preStop + timeout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DRAIN_FLAG",
    "DRAIN_SINCE",
    "GRACE_MARGIN_S",
    "ROLLING_UPDATE",
    "STRATEGIES",
    "UPGRADES",
    "drain_plan",
    "drain_problems",
    "drain_warning",
    "server_command",
]

DRAIN_FLAG = "shutdown-timeout"
# The first release whose catalogue has DRAIN_FLAG (for messages; the catalogue decides).
DRAIN_SINCE = "0.18.0"
# Seconds past preStop + shutdown timeout before the kubelet's SIGKILL: the HTTP server's teardown and the engine
# processes' end (v1/utils.py shutdown: "Allow 5 seconds for remaining procs to terminate").
GRACE_MARGIN_S = 15
STRATEGIES = ("Recreate", "RollingUpdate")
# "": a change goes through the Deployment's strategy; blue_green: plugins/module_utils/blue_green.py.
UPGRADES = ("", "blue_green")
# A rolling update that never goes below the replicas serving: the new pod stages and loads beside the old one, and
# readiness gates the switch (it needs room for one more copy).
ROLLING_UPDATE = {"maxSurge": 1, "maxUnavailable": 0}
BUSY_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")

# The preStop of a release without a drain: out of the Service first, then until nothing runs or waits (or the
# timeout). Standard library only, as every vLLM image has python3; /metrics needs no API key (vLLM's
# AuthenticationMiddleware guards /v1 only).
_WAIT_SCRIPT = """\
import http.client, time
time.sleep({prestop})
end = time.monotonic() + {timeout}
while time.monotonic() < end:
    try:
        conn = http.client.HTTPConnection('127.0.0.1', {port}, timeout=2)
        conn.request('GET', '/metrics')
        text = conn.getresponse().read().decode()
    except Exception:
        break
    busy = sum(float(line.rsplit(' ', 1)[1]) for line in text.splitlines()
               if line.split('{{', 1)[0].split(' ', 1)[0] in {names!r})
    if not busy:
        break
    time.sleep(0.5)
"""


# The AWS Deep Learning Containers start vLLM from /usr/local/bin/dockerd_entrypoint.sh (aws/deep-learning-containers
# vllm/x86_64/gpu/Dockerfile:52), a bash script that runs `python3 -m vllm.entrypoints.openai.api_server "$@"` without
# exec (vllm/x86_64/build_artifacts/dockerd_entrypoint.sh at 088d4c35c4, the workshop's 0.9.0 image; later scripts
# end with `vllm serve "$@"`, still without exec): bash stays PID 1 with no handler, the kernel drops the SIGTERM,
# and vLLM never hears of it until the SIGKILL at the end of the grace period. Their servers run that command
# themselves, so vLLM is PID 1 and gets the signal.
DLC_COMMAND = ("python3", "-m", "vllm.entrypoints.openai.api_server")
_DLC_IMAGE = re.compile(
    r"^(public\.ecr\.aws/deep-learning-containers|763104351884\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com)/vllm[:@]"
)


def server_command(image: Any) -> list[str]:
    """The container command of a server of ``image``: the DLC's own, for an AWS DLC image; else the image's
    entry point (``[]``)."""
    return list(DLC_COMMAND) if _DLC_IMAGE.match(str(image or "")) else []


def _seconds(value: Any) -> int | None:
    """A whole number of seconds (extra vars arrive as text), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def drain_plan(spec: Mapping[str, Any], release_flags: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the server pods of ``spec`` get: ``engine_args`` to add, the ``prestop`` handler (or None), the grace
    period, and whether the release drains itself (``mode`` ``drain`` or ``wait``)."""
    timeout = _seconds(spec.get("shutdown_timeout"))
    prestop = _seconds(spec.get("prestop_seconds"))
    grace = _seconds(spec.get("termination_grace_seconds"))
    timeout, prestop = timeout or 0, prestop or 0
    drains = release_flags is not None and DRAIN_FLAG in release_flags
    if drains:
        handler = {"sleep": {"seconds": prestop}} if prestop else None
        engine_args = {DRAIN_FLAG: timeout}
    else:
        script = _WAIT_SCRIPT.format(
            prestop=prestop, timeout=timeout, port=_seconds(spec.get("port")) or 0, names=BUSY_METRICS
        )
        handler = {"exec": {"command": ["python3", "-c", script]}} if prestop or timeout else None
        engine_args = {}
    return {
        "mode": "drain" if drains else "wait",
        "shutdown_timeout": timeout,
        "prestop_seconds": prestop,
        "grace_seconds": grace if grace is not None else prestop + timeout + GRACE_MARGIN_S,
        "prestop": handler,
        "engine_args": engine_args,
    }


def drain_warning(spec: Mapping[str, Any]) -> str:
    """The deploy warning for a release without a drain, or ``""``."""
    drain = spec["drain"]
    # An unknown release gets the wait (it works on every release) and the warning that it is unknown.
    if drain["mode"] == "drain" or not spec.get("vllm_version"):
        return ""
    return (
        f"model {spec['name']}: vLLM {spec['vllm_version']} has no --shutdown-timeout (from {DRAIN_SINCE}): on SIGTERM "
        f"it drops the requests in flight, so each pod's preStop waits up to {drain['shutdown_timeout']} s for "
        f"{' and '.join(BUSY_METRICS)} to read 0 after {drain['prestop_seconds']} s out of the Service"
    )


def drain_problems(spec: Mapping[str, Any]) -> list[str]:
    """One line per drain or strategy setting that cannot work."""
    name, problems = spec["name"], []
    for key in ("shutdown_timeout", "prestop_seconds", "termination_grace_seconds"):
        value = spec.get(key)
        if key == "termination_grace_seconds" and value in (None, ""):
            continue
        seconds = _seconds(value)
        if seconds is None or seconds < 0:
            problems.append(f"model {name}: {key} {value!r} must be a whole number of seconds, 0 or more")
    if problems:
        return problems
    drain = spec["drain"]
    needed = drain["prestop_seconds"] + drain["shutdown_timeout"]
    if drain["grace_seconds"] < needed:
        problems.append(
            f"model {name}: termination_grace_seconds {drain['grace_seconds']} is shorter than prestop_seconds "
            f"{drain['prestop_seconds']} + shutdown_timeout {drain['shutdown_timeout']}, so the kubelet kills vLLM "
            f"before the requests in flight end; set at least {needed} or leave it unset "
            f"({needed + GRACE_MARGIN_S})"
        )
    strategy = spec.get("strategy")
    if strategy not in STRATEGIES:
        problems.append(f"model {name}: strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    upgrade = spec.get("upgrade") or ""
    if upgrade not in UPGRADES:
        problems.append(f"model {name}: upgrade {upgrade!r} is not one of {', '.join(repr(u) for u in UPGRADES)}")
    elif upgrade == "blue_green" and (spec.get("autoscaling") or spec.get("multi_node")):
        what = "an autoscaler" if spec.get("autoscaling") else "a model across nodes (a LeaderWorkerSet)"
        problems.append(f"model {name}: upgrade blue_green is not supported with {what}; use strategy RollingUpdate")
    return problems

# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The wait loop: :class:`DeploymentWatch` polls about once a second until everything succeeded (Job Complete,
Deployment rolled out and Available, PVC Bound), a finding is certain, or the timeout passes; an API that stops
answering is ridden out for ``api_grace`` seconds. Reading is :class:`ClusterReader`'s, judging a look
:func:`progress`'s and :func:`diagnose`'s; what is left here is pacing and the loop's own findings."""

from __future__ import annotations

import dataclasses
import time
import typing as t

from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.findings import Finding, Settings
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.objects import diagnose
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.progress import progress
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.reader import ClusterReader, WatchScope
from ansible_collections.llmops.vllm.plugins.module_utils.diagnosis.snapshot import _one_line


@dataclasses.dataclass
class WaitResult:
    """What a wait ended with."""

    ok: bool
    states: dict[str, t.Any]
    elapsed_ms: int
    polls: int
    finding: Finding | None = None


@dataclasses.dataclass(frozen=True)
class PollTiming:
    """How a watch paces itself, and the clock and sleep it keeps time with (scripted in tests); the timeout of one
    API request is the reader's."""

    #: Seconds between looks.
    interval: float = 1.0
    #: Seconds the API may go unanswered before that is a finding.
    api_grace: float = 60.0
    clock: t.Callable[[], float] = time.time
    sleep: t.Callable[[float], None] = time.sleep


@dataclasses.dataclass
class _Poll:
    """One wait's running state: when it began, its deadline, the looks taken, the last good look and its time."""

    started: float
    deadline: float
    last_ok: float
    snap: dict[str, t.Any]
    polls: int = 0

    def result(self, clock: t.Callable[[], float], finding: Finding | None) -> WaitResult:
        states = progress(self.snap) if self.snap.get("now") else {"done": False}
        return WaitResult(
            ok=finding is None,
            states=states,
            elapsed_ms=int((clock() - self.started) * 1000),
            polls=self.polls,
            finding=finding,
        )


class DeploymentWatch:
    """Polls the objects deploy created until they succeed or a finding is certain.

    ``kube`` is the collection's :class:`kube_client.Kube` (one client, reused for every call). The arguments are
    kept as a :class:`WatchScope` (what to watch), :class:`Settings` (budgets) and :class:`PollTiming` (pacing).
    """

    def __init__(
        self,
        kube: t.Any,
        scope: WatchScope,
        settings: Settings | None = None,
        timing: PollTiming | None = None,
        request_timeout: float = 10.0,
    ):
        self.scope = scope
        self.settings = settings or Settings()
        timing = timing or PollTiming()
        self.timing = dataclasses.replace(timing, interval=max(timing.interval, 0.5))
        self.reader = ClusterReader(kube, self.scope, request_timeout)
        self.api_errors: list[str] = []

    def snapshot(self, started: float) -> dict[str, t.Any]:
        """Read what :func:`diagnose` needs, fetching cluster-wide objects only when a finding may need them."""
        return self.reader.snapshot(self.timing.clock(), started, self.settings)

    def job_manifest(self, job: str, container: str = "model-download") -> dict[str, t.Any]:
        """The staging engine's manifest from the log of ``job``'s succeeded pod (its last ``MANIFEST`` line).

        Returns ``{"manifest": dict | None, "pod": str | None, "error": str | None}``; a log that cannot be
        read, or holds no manifest line, gives ``manifest: None`` and says why in ``error``.
        """
        return self.reader.job_manifest(job, container)

    def run(self, timeout: float, once: bool = False) -> WaitResult:
        """Poll until done, a finding, or ``timeout`` seconds; ``once`` takes a single look (check mode)."""
        clock, timing = self.timing.clock, self.timing
        started = clock()
        poll = _Poll(started=started, deadline=started + timeout, last_ok=started, snap={"targets": self.scope.names})
        while True:
            poll.polls += 1
            try:
                poll.snap = self.snapshot(started)
                poll.last_ok = clock()
            except Exception as exc:  # noqa: BLE001 - the API may be restarting; judged by api_grace below
                self.api_errors.append(_one_line(str(exc), 200))
                if clock() - poll.last_ok >= timing.api_grace or once:
                    silent = clock() - poll.last_ok
                    return poll.result(clock, _api_unreachable(self.scope.namespace, silent, self.api_errors))
                timing.sleep(timing.interval)
                continue
            over, finding = _verdict(poll.snap)
            if over or once:
                return poll.result(clock, finding)
            now = clock()
            if now >= poll.deadline:
                return poll.result(clock, _timeout_finding(poll.snap, timeout, self.scope.namespace))
            timing.sleep(min(timing.interval, max(poll.deadline - now, 0)))


def _verdict(snap: dict[str, t.Any]) -> tuple[bool, Finding | None]:
    """Whether a look ends the wait, and with what: every watched object done (no finding), or a certain failure."""
    if progress(snap)["done"]:
        return True, None
    finding = diagnose(snap)
    return finding is not None, finding


def _api_unreachable(namespace: str, silent: float, errors: list[str]) -> Finding:
    return Finding(
        "api_unreachable",
        f"The Kubernetes API did not answer for {silent:.0f}s: "
        f"{errors[-1]}; check the kubeconfig and that the control plane is up",
        f"Namespace/{namespace}",
        {"errors": errors[-5:]},
    )


def _timeout_finding(snap: dict[str, t.Any], timeout: float, namespace: str) -> Finding:
    states = progress(snap)
    pending = [
        f"{kind[:-1]} {name} ({state['status']})"
        for kind in ("pvcs", "jobs", "deployments", "leaderworkersets")
        for name, state in states[kind].items()
        if not state["done"]
    ]
    return Finding(
        "timeout",
        f"Timed out after {timeout:.0f}s with no known failure; still waiting for {', '.join(pending)}; "
        f"look at their events (kubectl describe) or raise the timeout",
        f"Namespace/{namespace}",
        {"pending": pending},
    )

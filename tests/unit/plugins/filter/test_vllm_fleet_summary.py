"""The fleet summary from what each host registered: states, the failed step's message, endpoints, time."""

from __future__ import annotations

from ansible_collections.llmops.vllm.plugins.filter.vllm_fleet_summary import vllm_fleet_summary

SPECS = [{"name": "mistral", "port": 8080}]


def test_rows_for_a_changed_an_unchanged_and_a_failed_cluster():
    hostvars = {
        "east": {
            "vllm_server_specs": SPECS,
            "vllm_namespace": "llm",
            "vllm_fleet_seconds": "12.34",
            "vllm_deploy_applied": {"changed": True},
            "vllm_server_applied": {"changed": False},
        },
        "west": {
            "vllm_server_specs": SPECS,
            "vllm_fleet_seconds": 3.0,
            "vllm_deploy_applied": {"changed": False},
            "vllm_server_applied": {"changed": False},
        },
        "gone": {
            "vllm_server_specs": SPECS,
            "vllm_fleet_seconds": 1.0,
            "vllm_deploy_applied": {"failed": True, "msg": "checking the cluster: no answer"},
        },
        "early": {},  # failed before any step registered a result (a preflight assert)
    }
    summary = vllm_fleet_summary(["east", "west", "gone", "early"], hostvars, ["east", "west"])
    rows = {r["cluster"]: r for r in summary["rows"]}
    assert rows["east"] == {
        "cluster": "east",
        "models": ["mistral"],
        "state": "changed",
        "message": "",
        "endpoints": ["llm/mistral:8080"],
        "seconds": 12.3,
    }
    assert rows["west"]["state"] == "ok" and rows["west"]["endpoints"] == ["default/mistral:8080"]
    assert rows["gone"]["state"] == "failed" and rows["gone"]["message"] == "checking the cluster: no answer"
    assert rows["gone"]["seconds"] is None and rows["gone"]["endpoints"] == []
    assert rows["early"]["state"] == "failed" and rows["early"]["models"] == []
    assert summary["table"][0].split() == ["cluster", "state", "time", "models", "->", "endpoints"]
    assert summary["table"][3].endswith("mistral -> checking the cluster: no answer")
    assert summary["table"][4].endswith(" -> see the error above")

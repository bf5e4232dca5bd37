#!/usr/bin/python
# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ruff: noqa: E402
from __future__ import annotations

DOCUMENTATION = r"""
module: vllm_model_stage
short_description: Verify model weights and stage them, locally (parallel, atomic, idempotent) or onto a cluster volume
version_added: 0.1.0
author:
  - llmops.vllm maintainers (@llmops)
description:
  - Verifies a model directory in the Mistral consolidated layout (C(params.json), C(consolidated*.safetensors),
    C(tokenizer.model.v3)) or the Hugging Face layout (C(config.json), C(model*.safetensors) with
    C(model.safetensors.index.json) when sharded, C(tokenizer.json) or C(tokenizer.model)).
  - Each safetensors header is parsed and its tensor extents are checked against the file size, so truncated
    or corrupt files are caught before vLLM loads them; every index is checked against its shards;
    C(params.json)/C(config.json) must be readable with sane sizes. Optionally every file's sha256 is checked.
  - With O(dest), copies the model there with parallel workers (one large file is split across them) into a
    temporary sibling directory, verifies the copy, writes a manifest (C(.llmops-manifest.json)) last and renames
    the directory into place. O(dest) is never seen half-written, and a failed run leaves the previous copy
    untouched. Files unchanged since the previous staging are hard-linked rather than copied.
  - When O(dest) already holds a verified copy, decided from its manifest and the sizes and modification times
    of both sides (no re-hashing), nothing is read or written and the result is C(changed=false).
  - Without O(dest), verifies O(src) in place and, with O(write_manifest=true), records the manifest there.
  - The same engine runs in the model download Job and in the init container that copies weights into a RAM
    volume, so all three report the same manifest.
  - Runs on the host that sees the files (the control node, or a host that mounts the file system).
  - "Cluster-side mode: with O(pvc) instead of O(src), makes sure the model is complete on that volume of the
    cluster, through the same download Job the C(llmops.vllm.model_download) role runs (the staging engine in
    the ConfigMap O(stage_configmap), running the engine's C(download) onto the claim). A Job named O(job_name)
    that is Complete is reused (RV(changed=false)); a running one is waited for; without one, the ConfigMap and the
    Job are created by server-side apply (field manager C(llmops-vllm)) and waited for. The result carries the
    manifest the Job printed as the last line of its log, so both modes report the same RV(manifest)."
  - The wait stops at the first certain failure and names it in one line, as M(llmops.vllm.vllm_wait) does (a
    failed Job, Hugging Face refusing the token, an image that cannot be pulled, a pod that cannot be scheduled,
    a claim that does not bind).
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  src:
    description:
      - Directory holding the model to verify and, with O(dest), to copy (local mode).
      - Exactly one of O(src) and O(pvc) is required.
    type: path
  dest:
    description:
      - Directory to create or replace with a verified copy of O(src).
      - Its parent directory is created when missing. O(dest) must not be a mount point (stage into a sub-directory
        of the mount instead), and must not overlap O(src).
      - When omitted, O(src) is only verified in place.
    type: path
  workers:
    description:
      - Number of copy (and hashing) threads.
      - Defaults to twice the CPUs this process may use, at least 4 and at most 16.
    type: int
  verify_sha256:
    description:
      - Compute every file's sha256 (during the copy, not in a second pass) and record it in the manifest.
      - Values from O(sha256) and from a manifest already in O(src) (for example the download Job's, which holds
        the Hub's LFS hashes) are checked; a mismatch fails without changing O(dest).
      - Implied when O(sha256) is given.
    type: bool
    default: false
  sha256:
    description:
      - Expected sha256 per file, as a dictionary of relative file name to hex digest, or the path of a file on the
        managed host holding them (a JSON dictionary, a C(.llmops-manifest.json), or C(sha256sum) output).
      - Every file named must exist in the model.
    type: raw
  required_free_bytes:
    description:
      - Free space to keep on the file system of O(dest) after the copy, in bytes. The free-space check before
        copying requires the bytes to copy plus this margin.
    type: int
    default: 0
  write_manifest:
    description:
      - Without O(dest), write (or update) C(.llmops-manifest.json) in O(src). The result is C(changed=true) only when
        the manifest written differs from the one there.
      - Ignored when O(dest) is given (staging always writes the manifest into O(dest)).
    type: bool
    default: false
  force:
    description:
      - Replace an existing O(dest) that holds files but no manifest (so was not staged by this module).
      - Without it such a directory is left untouched and the task fails.
    type: bool
    default: false
  pvc:
    description:
      - PersistentVolumeClaim of the model volume (cluster-side mode), mounted at C(/models) in the download Job.
      - The claim must exist in O(namespace) (the C(llmops.vllm.storage) role creates it).
    type: str
  namespace:
    description:
      - Namespace of O(pvc) and of the download Job. Required with O(pvc); ignored in local mode.
    type: str
  path:
    description:
      - Directory of the model inside the volume, relative to its root, for example V(mistral-7b-v0-3) (the Job
        writes C(/models/<path>)). Required with O(pvc).
    type: str
  hf_repo:
    description:
      - Hugging Face repository to download, for example V(mistralai/Mistral-7B-Instruct-v0.3). Required with O(pvc).
    type: str
  hf_revision:
    description:
      - Branch, tag or commit of O(hf_repo). When omitted, V(main).
    type: str
  hf_files:
    description:
      - Files (names or glob patterns) to download; when omitted, every file of the revision.
    type: list
    elements: str
  hf_token_secret:
    description:
      - Secret in O(namespace) holding the Hugging Face token (optional in the Job, so public models need none).
        When omitted, V(hf-token).
    type: str
  hf_token_key:
    description:
      - Key of the token in O(hf_token_secret). When omitted, V(token).
    type: str
  hf_endpoint:
    description:
      - Hugging Face Hub URL or mirror. When omitted, C(https://huggingface.co).
    type: str
  image:
    description:
      - Image with C(python3) (3.8 or later) that runs the staging engine. When omitted, V(python:3.11-slim).
    type: str
  job_name:
    description:
      - Name of the download Job to reuse or create. When omitted, V(model-download), the Job of the
        C(llmops.vllm.model_download) role's first model, so this module and the role share it.
      - A Job of that name that downloads something else (another repository, files, directory or claim) is an
        error, not replaced.
    type: str
  stage_configmap:
    description:
      - ConfigMap carrying the staging engine (shared with the servers' init containers). When omitted,
        V(llmops-model-stage).
    type: str
  tolerations:
    description:
      - Tolerations of the download pod.
    type: list
    elements: dict
  node_selector:
    description:
      - Node selector of the download pod.
    type: dict
  timeout:
    description:
      - Seconds to wait for the Job to complete before failing with reason C(timeout); V(0) looks once and returns
        without waiting. When omitted, 7200.
    type: int
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Verifies O(src) and the free space, and returns in RV(copied_files) what would be copied.
      - In cluster-side mode, creates nothing and returns in RV(applied) what would be created; a Complete Job's
        manifest is still read back, a running Job is looked at once.
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) when in diff mode.
    support: full
    details:
      - The diff lists the files (size, modification time, sha256 when known) of O(dest) before and after.
      - In cluster-side mode, the diff lists the objects created.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/llmops.vllm.vllm) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - llmops.vllm.vllm
notes:
  - Errors name the file and the problem in one line (C(msg)) and carry RV(reason) (listed under RETURN; what each
    means and what to do in docs/reasons.md) and the same as data in RV(details).
  - Only safetensors weights are supported.
  - The manifest records the modification times of O(src); the copy keeps them.
  - In cluster-side mode, failures carry RV(reason), RV(object) and RV(evidence) like M(llmops.vllm.vllm_wait)'s.
  - The cluster-side mode needs the C(kubernetes) Python library; the local mode does not.
seealso:
  - module: llmops.vllm.vllm_wait
  - name: safetensors format
    description: The file format whose headers this module checks.
    link: https://huggingface.co/docs/safetensors/index
"""

EXAMPLES = r"""
- name: Stage the Mistral 7B weights from FSx for Lustre to local NVMe
  llmops.vllm.vllm_model_stage:
    src: /fsx/models/mistral-7b-v0-3
    dest: /mnt/nvme/models/mistral-7b-v0-3
  register: staged

- name: Show what the roles use from the manifest
  ansible.builtin.debug:
    msg: >-
      {{ staged.manifest.format }} model, {{ staged.manifest.facts.num_layers }} layers,
      {{ staged.manifest.facts.dtype }}, {{ staged.manifest.total_bytes }} bytes,
      {{ staged.throughput_bytes_per_s }} bytes/s

- name: Stage and check every file against the Hub's LFS hashes
  llmops.vllm.vllm_model_stage:
    src: /fsx/models/mistral-7b-v0-3
    dest: /mnt/nvme/models/mistral-7b-v0-3
    sha256: /fsx/models/mistral-7b-v0-3.sha256  # sha256sum output, or a dict of file name to digest
    workers: 16
    required_free_bytes: 2147483648

- name: Verify a model in place and record its manifest (hashes included)
  llmops.vllm.vllm_model_stage:
    src: /fsx/models/mistral-7b-v0-3
    verify_sha256: true
    write_manifest: true

- name: Make sure the model is complete on the FSx volume of the cluster, and get its manifest
  llmops.vllm.vllm_model_stage:
    pvc: fsx-models
    namespace: vllm
    path: mistral-7b-v0-3
    hf_repo: mistralai/Mistral-7B-Instruct-v0.3
    hf_files: [consolidated.safetensors, params.json, tokenizer.model.v3]
    timeout: 3600
  register: on_volume

- name: Size the server from what is on the volume
  ansible.builtin.debug:
    msg: "{{ on_volume.manifest.total_bytes }} bytes, {{ on_volume.manifest.facts.num_layers }} layers"

- name: What would be copied, without copying
  llmops.vllm.vllm_model_stage:
    src: /fsx/models/mistral-7b-v0-3
    dest: /mnt/nvme/models/mistral-7b-v0-3
  check_mode: true
  diff: true
"""

RETURN = r"""
changed:
  description:
    - Whether O(dest) was (or in check mode would be) replaced, or a manifest written in verify-only mode.
    - In cluster-side mode, whether the download Job was (or would be) created.
  returned: always
  type: bool
dest:
  description: The directory that holds the verified model; O(src) in verify-only mode.
  returned: success in local mode
  type: str
  sample: /mnt/nvme/models/mistral-7b-v0-3
manifest:
  description:
    - The manifest of the verified model, as written to C(.llmops-manifest.json).
    - In check mode, the manifest the copy would get.
    - In cluster-side mode, the manifest the download Job printed as the last line of its log (C(source) names the
      repository, revision and commit); null in check mode when the Job does not exist or is still running.
  returned: success
  type: dict
  contains:
    format:
      description: Detected layout used to load the model, V(mistral) or V(huggingface).
      type: str
      sample: mistral
    layouts:
      description: Every complete layout present (Mistral's repositories carry both).
      type: list
      elements: str
      sample: [mistral]
    files:
      description: Every file of the model with its size, modification time and, when computed, sha256.
      type: list
      elements: dict
      sample:
        - path: consolidated.safetensors
          size: 14496078512
          mtime_ns: 1716370000000000000
          sha256: 8a7d1c7e4bd3ea68d8b1a5e7fd00e2c2bbf08e6e71a6ff6d0c1c0c8b1f1c3e1a
    file_count:
      description: Number of files.
      type: int
      sample: 3
    total_bytes:
      description: Sum of the file sizes.
      type: int
      sample: 14496666216
    facts:
      description:
        - Model facts for sizing and for vLLM's arguments, from C(params.json)/C(config.json) and the tensors.
        - Keys are V(architecture), V(hidden_size), V(num_layers), V(num_attention_heads), V(num_kv_heads),
          V(head_dim), V(intermediate_size), V(vocab_size), V(max_position_embeddings) (null when the
          configuration has none), V(dtype) (of most weight bytes), V(config_dtype), V(parameter_count),
          V(tensor_count), V(weight_bytes), V(weight_files) and V(tokenizer).
      type: dict
      sample:
        architecture: mistral
        hidden_size: 4096
        num_layers: 32
        num_attention_heads: 32
        num_kv_heads: 8
        head_dim: 128
        intermediate_size: 14336
        vocab_size: 32768
        max_position_embeddings: null
        dtype: bfloat16
        parameter_count: 7248023552
        weight_files: [consolidated.safetensors]
        tokenizer: tokenizer.model.v3
    source:
      description:
        - Where the model came from (C(path) for a staged copy; C(repo), C(revision), C(commit) for a download).
      type: dict
      returned: when known
    created:
      description: When the manifest was made (UTC, ISO 8601).
      type: str
namespace:
  description: Namespace of the claim and the Job (cluster-side mode).
  returned: success in cluster-side mode
  type: str
  sample: vllm
pvc:
  description: The claim of the model volume (cluster-side mode).
  returned: success in cluster-side mode
  type: str
  sample: fsx-models
path:
  description: Directory of the model inside the volume (cluster-side mode).
  returned: success in cluster-side mode
  type: str
  sample: mistral-7b-v0-3
job:
  description: Name of the download Job reused or created (cluster-side mode).
  returned: always in cluster-side mode
  type: str
  sample: model-download
applied:
  description:
    - Objects created by server-side apply (in check mode, that would be), as C(Kind/name); empty when the Job was
      reused.
  returned: always in cluster-side mode
  type: list
  elements: str
  sample: [ConfigMap/llmops-model-stage, Job/model-download]
pod:
  description: The Job's succeeded pod whose log the manifest was read from (cluster-side mode).
  returned: when the Job completed
  type: str
  sample: model-download-x7k2p
states:
  description: The claim's and the Job's state when the module stopped, as M(llmops.vllm.vllm_wait) reports them.
  returned: when the module waited or looked
  type: dict
  sample:
    done: true
    jobs:
      model-download: {status: Complete, done: true, active: 0, succeeded: 1, failed: 0}
    pvcs:
      fsx-models: {status: Bound, done: true, volume: fsx-pv}
reason:
  description:
    - Machine-readable cause of the failure, in both modes (the collection's one vocabulary; docs/reasons.md).
    - Local mode, as the staging engine names the problem (also in RV(details.problem)), one of V(source_missing),
      V(missing_file), V(unknown_format), V(truncated), V(corrupt), V(shard_missing), V(tensor_missing),
      V(bad_config), V(sha256_mismatch), V(no_space), V(permission_denied), V(foreign_dest), V(source_changed),
      V(bad_input), V(io_error).
    - Cluster-side mode, V(bad_input), V(job_mismatch), V(apply_failed), V(api_error), V(api_unreachable),
      V(manifest_unavailable), or a reason of M(llmops.vllm.vllm_wait).
  returned: failure
  type: str
  sample: job_auth
object:
  description: The object a cluster-side failure was found on, as C(Kind/name).
  returned: failure in cluster-side mode
  type: str
  sample: Job/model-download
evidence:
  description: What a cluster-side failure's diagnosis rests on (the Job condition, container status, last log lines).
  returned: failure in cluster-side mode
  type: dict
copied_files:
  description: Files copied from O(src) (in check mode, that would be copied).
  returned: success in local mode
  type: list
  elements: str
  sample: [consolidated.safetensors, params.json, tokenizer.model.v3]
reused_files:
  description: Files unchanged since the previous staging, hard-linked from the previous O(dest) instead of copied.
  returned: success in local mode
  type: list
  elements: str
removed_files:
  description: Files in the previous O(dest) that are not in O(src) and are gone from the new copy.
  returned: success in local mode
  type: list
  elements: str
bytes_copied:
  description: Bytes copied (in check mode, that would be copied).
  returned: success in local mode
  type: int
  sample: 14496666216
elapsed_ms:
  description: Time the module's work took, in milliseconds.
  returned: success
  type: float
  sample: 7412.5
throughput_bytes_per_s:
  description: RV(bytes_copied) divided by the elapsed time (verification included); 0 when nothing was copied.
  returned: success in local mode
  type: int
  sample: 1955733000
details:
  description: On failure, the problem as data.
  returned: failure in local mode
  type: dict
  contains:
    path:
      description: The file or directory at fault.
      type: str
    problem:
      description: What is wrong, as a keyword (see the notes).
      type: str
  sample:
    path: /fsx/models/mistral-7b-v0-3/consolidated.safetensors
    problem: truncated
    expected_size: 14496078512
    actual_size: 9663676416
"""

import copy

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.llmops.vllm.plugins.module_utils.model_stage import ModelStageError, stage, verify

LOCAL_OPTIONS = {
    "src": {"type": "path"},
    "dest": {"type": "path"},
    "workers": {"type": "int"},
    "verify_sha256": {"type": "bool", "default": False},
    "sha256": {"type": "raw"},
    "required_free_bytes": {"type": "int", "default": 0},
    "write_manifest": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
}
CLUSTER_OPTIONS = {
    "pvc": {"type": "str"},
    "path": {"type": "str"},
    "hf_repo": {"type": "str"},
    "hf_revision": {"type": "str"},
    "hf_files": {"type": "list", "elements": "str"},
    "hf_token_secret": {"type": "str", "no_log": False},
    "hf_token_key": {"type": "str", "no_log": False},
    "hf_endpoint": {"type": "str"},
    "image": {"type": "str"},
    "job_name": {"type": "str"},
    "stage_configmap": {"type": "str"},
    "tolerations": {"type": "list", "elements": "dict"},
    "node_selector": {"type": "dict"},
    "timeout": {"type": "int"},
}


def argspec() -> dict:
    """Local options, cluster options, and kubernetes.core's connection options (used by the cluster mode)."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(copy.deepcopy(LOCAL_OPTIONS))
    spec.update(copy.deepcopy(CLUSTER_OPTIONS))
    # namespace is not exclusive with src: module_defaults of the action group may set it for every module.
    spec["namespace"] = {"type": "str"}
    return spec


# One mode per task: src (files on this host) or pvc (files on a volume of the cluster).
MUTUALLY_EXCLUSIVE = [["src", "pvc"]]
MUTUALLY_EXCLUSIVE += [["pvc", option] for option in LOCAL_OPTIONS if option != "src"]
MUTUALLY_EXCLUSIVE += [["src", option] for option in CLUSTER_OPTIONS if option != "pvc"]


def _expected_sha256(module: AnsibleModule):
    value = module.params["sha256"]
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        return value
    module.fail_json(
        msg="sha256: expected a dictionary of file name to sha256, or a path",
        reason="bad_input",
        details={"problem": "bad_input"},
    )


def run_local(module: AnsibleModule) -> dict:
    """Verify src in place, or stage src to dest, on the host the module runs on."""
    p = module.params
    common = {"workers": p["workers"], "sha256": p["verify_sha256"], "expected_sha256": _expected_sha256(module)}
    if p["dest"] is None:
        return verify(p["src"], write_manifest=p["write_manifest"], check_mode=module.check_mode, **common)
    return stage(
        p["src"],
        p["dest"],
        required_free_bytes=p["required_free_bytes"],
        force=p["force"],
        check_mode=module.check_mode,
        **common,
    )


def main_local(module: AnsibleModule) -> None:
    """Local mode: stage or verify files on this host."""
    try:
        result = run_local(module)
    except ModelStageError as err:
        module.fail_json(msg=str(err), reason=err.problem, details=err.details)
    diff = result.pop("diff")
    result.pop("check_mode", None)
    result.pop("src", None)
    if module._diff:
        result["diff"] = {
            "before_header": f"{result['dest']} (before)",
            "after_header": f"{result['dest']} (after)",
            **diff,
        }
    module.exit_json(**result)


def main_cluster(module: AnsibleK8SModule) -> None:
    """Cluster-side mode: make sure the model is complete on the volume, through the download Job."""
    from ansible_collections.llmops.vllm.plugins.module_utils.model_download import (
        DownloadInputError,
        StageFailure,
        check_request,
        ensure_model,
    )

    try:
        request = check_request(module.params)
    except DownloadInputError as err:
        module.fail_json(msg=str(err), reason="bad_input")
    module.requires("kubernetes")
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
    from ansible_collections.llmops.vllm.plugins.module_utils.kube_apply import unavailable
    from ansible_collections.llmops.vllm.plugins.module_utils.kube_client import ApiUnavailable, connect

    try:
        # Bounded: making kubernetes.core's client may ask the server its version, without a timeout of its own.
        dynamic = connect({k: module.params.get(k) for k in AUTH_ARG_SPEC}, 60).dynamic
    except ApiUnavailable as exc:
        module.fail_json(msg=unavailable(exc, "applying the download Job"), reason="api_unreachable")
    except CoreException as exc:
        module.fail_json(msg=f"cannot reach the Kubernetes API: {exc}", reason="api_unreachable")
    try:
        result = ensure_model(dynamic, request, check_mode=module.check_mode)
    except StageFailure as failure:
        finding = failure.finding
        module.fail_json(
            msg=finding.message,
            reason=finding.reason,
            object=finding.object,
            evidence=finding.evidence,
            **failure.result,
        )
    if module._diff:
        result["diff"] = {
            "before_header": f"namespace {request['namespace']} (before)",
            "after_header": f"namespace {request['namespace']} (after)",
            "before": "",
            "after": "".join(f"{ref}: server-side apply\n" for ref in result["applied"]),
        }
    module.exit_json(**result)


def main() -> None:
    # The kubernetes library is needed (and checked) only by the cluster-side mode.
    module = AnsibleK8SModule(
        module_class=AnsibleModule,
        argument_spec=argspec(),
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        required_one_of=[["src", "pvc"]],
        supports_check_mode=True,
        check_k8s=False,
        check_pyyaml=False,
    )
    if module.params["pvc"] is not None:
        main_cluster(module)
    main_local(module)


if __name__ == "__main__":
    main()

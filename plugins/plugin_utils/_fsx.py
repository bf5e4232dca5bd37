# Copyright (c) 2025, llmops.vllm maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The FSx for Lustre StorageClass parameters checked against what CreateFileSystem accepts.

The CSI driver validates none of them: aws-fsx-csi-driver v1.9.0 copies ``deploymentType``, ``s3ImportPath``,
``s3ExportPath``, ``autoImportPolicy``, ``dataCompressionType`` and ``perUnitStorageThroughput`` from the
StorageClass into the request as they are (pkg/driver/controller.go:194-252, pkg/cloud/cloud.go:158-201), so a
value FSx refuses only shows up after apply, as a claim left Pending with "Could not create volume" in its events.
These checks say it before anything is applied, one line per problem naming the role variable and the fix.

What FSx accepts is taken from the FSx API reference, CreateFileSystemLustreConfiguration
(https://docs.aws.amazon.com/fsx/latest/APIReference/API_CreateFileSystemLustreConfiguration.html) and the
botocore model of the same API (botocore 1.44.8, botocore/data/fsx/2018-03-01/service-2.json, shapes
CreateFileSystemLustreConfiguration, LustreDeploymentType, AutoImportPolicyType, DataCompressionType,
PerUnitStorageThroughput, ArchivePath). Pure functions over plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AUTO_IMPORT_POLICIES",
    "COMPRESSION_TYPES",
    "DEPLOYMENT_TYPES",
    "S3_LINK_TYPES",
    "THROUGHPUTS",
    "check_storage_class",
]

# service-2.json, shape LustreDeploymentType (enum).
DEPLOYMENT_TYPES = ("SCRATCH_1", "SCRATCH_2", "PERSISTENT_1", "PERSISTENT_2")
# service-2.json, shape DataCompressionType (enum).
COMPRESSION_TYPES = ("LZ4", "NONE")
# service-2.json, shape AutoImportPolicyType (enum).
AUTO_IMPORT_POLICIES = ("NONE", "NEW", "NEW_CHANGED", "NEW_CHANGED_DELETED")
# CreateFileSystemLustreConfiguration.PerUnitStorageThroughput: "Required with PERSISTENT_1 and PERSISTENT_2
# deployment types using an SSD or HDD storage class ... Valid values: For PERSISTENT_1 SSD storage: 50, 100, 200
# MB/s/TiB. For PERSISTENT_1 HDD storage: 12, 40 MB/s/TiB. For PERSISTENT_2 SSD storage: 125, 250, 500, 1000
# MB/s/TiB." The role renders no storageType, so the file system is SSD (CreateFileSystemRequest.StorageType:
# "Default value is SSD"; the driver's own default, examples/kubernetes/dynamic_provisioning/README.md:23). SCRATCH
# types take no throughput: the template leaves the parameter out for them.
THROUGHPUTS = {"PERSISTENT_1": (50, 100, 200), "PERSISTENT_2": (125, 250, 500, 1000)}
HDD_THROUGHPUTS = {"PERSISTENT_1": (12, 40)}
# ImportPath, ExportPath and AutoImportPolicy at creation. The API reference page above: "The following parameters
# are not supported for file systems with the Persistent_2 deployment type. Instead, use
# CreateDataRepositoryAssociation to create a data repository association to link your Lustre file system to a data
# repository. AutoImportPolicy, ExportPath, ImportedChunkSize, ImportPath"; AutoImportPolicy: "Available with Scratch
# and Persistent_1 deployment types". The user guide's "Working with older deployment types"
# (https://docs.aws.amazon.com/fsx/latest/LustreGuide/older-deployment-types.html), which describes linking at
# creation, "applies to file systems with Scratch 1 deployment type, and also to file systems with Scratch 2 or
# Persistent 1 deployment types that do not use data repository associations".
S3_LINK_TYPES = ("SCRATCH_1", "SCRATCH_2", "PERSISTENT_1")
# ArchivePath (ImportPath, ExportPath): 3 to 4357 characters, no line breaks; "An example is
# s3://import-bucket/optional-prefix".
S3_URI = re.compile(r"^s3://(?P<bucket>[^/\s]+)(/[^\u0000\u0085\u2028\u2029\r\n]*)?$")
ARCHIVE_PATH_MAX = 4357


def _or(values: tuple) -> str:
    """``a, b or c``."""
    text = [str(v) for v in values]
    return text[0] if len(text) == 1 else f"{', '.join(text[:-1])} or {text[-1]}"


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _throughput(value: Any) -> int | None:
    """The throughput as a whole number, or None when it is not one (``"250"`` from ``-e`` counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = _text(value)
    return int(text) if re.fullmatch(r"\d+", text) else None


def _s3_bucket(key: str, value: str, problems: list[str]) -> str | None:
    match = S3_URI.match(value)
    if not match or len(value) > ARCHIVE_PATH_MAX:
        problems.append(
            f"{key} {value!r} is not an S3 path: write it like s3://bucket or s3://bucket/prefix "
            f"(at most {ARCHIVE_PATH_MAX} characters)"
        )
        return None
    return match.group("bucket")


def _s3_link(settings: Mapping[str, Any], deployment_type: str | None, problems: list[str]) -> None:
    """Import and export paths and the auto import policy: their form, each other, the deployment type."""
    import_path = _text(settings.get("storage_s3_import_path"))
    export_path = _text(settings.get("storage_s3_export_path"))
    policy = _text(settings.get("storage_auto_import_policy"))
    linked = [
        key
        for key, value in (
            ("storage_s3_import_path", import_path),
            ("storage_s3_export_path", export_path),
            ("storage_auto_import_policy", policy),
        )
        if value
    ]
    if not linked:
        return
    if deployment_type is not None and deployment_type not in S3_LINK_TYPES:
        # One line: the three variables have one cause and one fix.
        problems.append(
            f"{' and '.join(linked)}: FSx takes no S3 link when it creates a {deployment_type} file system "
            "(CreateFileSystem refuses ImportPath, ExportPath and AutoImportPolicy for it; PERSISTENT_2 links to S3 "
            "through data repository associations, which a StorageClass cannot create); empty "
            f"{'them' if len(linked) > 1 else 'it'} and create a data repository association once the file system "
            f"exists (aws fsx create-data-repository-association), or use storage_deployment_type {_or(S3_LINK_TYPES)}"
        )
    import_bucket = _s3_bucket("storage_s3_import_path", import_path, problems) if import_path else None
    export_bucket = _s3_bucket("storage_s3_export_path", export_path, problems) if export_path else None
    # ExportPath: "The Amazon S3 export bucket must be the same as the import bucket specified by ImportPath."
    # The driver's example adds: "s3ExportPath can not be given without specifying S3ImportPath", "autoImportPolicy
    # can not be given without specifying S3ImportPath" (examples/kubernetes/dynamic_provisioning_s3/README.md:34-37).
    if export_path and not import_path:
        problems.append(
            "storage_s3_export_path needs storage_s3_import_path: FSx exports only to the bucket it imports from; "
            "set an import path in the same bucket or empty storage_s3_export_path"
        )
    if import_bucket and export_bucket and import_bucket != export_bucket:
        problems.append(
            f"storage_s3_export_path is in bucket {export_bucket} but storage_s3_import_path is in bucket "
            f"{import_bucket}; FSx exports only to the import bucket: use s3://{import_bucket}/<prefix>"
        )
    if policy and policy not in AUTO_IMPORT_POLICIES:
        problems.append(f"storage_auto_import_policy {policy!r} is not an FSx policy; use {_or(AUTO_IMPORT_POLICIES)}")
    elif policy and not import_path:
        problems.append(
            f"storage_auto_import_policy {policy} needs storage_s3_import_path: it says how FSx follows changes in the "
            "bucket it imports from; set an import path or empty storage_auto_import_policy"
        )


def check_storage_class(settings: Mapping[str, Any]) -> list[str]:
    """What FSx would refuse in the StorageClass parameters built from the role's variables, one line each.

    ``settings`` maps the storage role's variable names (``storage_deployment_type``,
    ``storage_per_unit_storage_throughput``, ``storage_data_compression_type``, ``storage_s3_import_path``,
    ``storage_s3_export_path``, ``storage_auto_import_policy``) to their values; a missing one counts as empty.
    """
    problems: list[str] = []
    deployment_type: str | None = _text(settings.get("storage_deployment_type"))
    if deployment_type not in DEPLOYMENT_TYPES:
        problems.append(
            f"storage_deployment_type {deployment_type!r} is not an FSx for Lustre deployment type; use "
            f"{_or(DEPLOYMENT_TYPES)}"
        )
        deployment_type = None  # the checks that depend on it would only add noise

    compression = _text(settings.get("storage_data_compression_type"))
    if compression not in COMPRESSION_TYPES:
        problems.append(
            f"storage_data_compression_type {compression!r} is not one FSx takes; use {_or(COMPRESSION_TYPES)}"
        )

    if deployment_type in THROUGHPUTS:
        raw = settings.get("storage_per_unit_storage_throughput")
        value = _throughput(raw)
        allowed = THROUGHPUTS[deployment_type]
        if value is None:
            problems.append(
                f"storage_per_unit_storage_throughput {raw!r} is not a number; {deployment_type} needs one in MB/s "
                f"per TiB: {_or(allowed)}"
            )
        elif value in HDD_THROUGHPUTS.get(deployment_type, ()):
            problems.append(
                f"storage_per_unit_storage_throughput {value} is for {deployment_type} on HDD storage, and this "
                f"StorageClass creates SSD file systems; use {_or(allowed)}"
            )
        elif value not in allowed:
            problems.append(
                f"storage_per_unit_storage_throughput {value} is not offered for {deployment_type}; use {_or(allowed)} "
                "(MB/s per TiB)"
            )

    _s3_link(settings, deployment_type, problems)
    return problems

"""The dynamic FSx StorageClass checked against what CreateFileSystem accepts, without a cluster or AWS.

The settings start from the storage role's own defaults (roles/storage/defaults/main.yml), so these tests follow
what a user gets; each case changes what a user would change and checks the line the preflight prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.vllm.plugins.filter.vllm_storage_preflight import FilterModule
from ansible_collections.llmops.vllm.plugins.plugin_utils._fsx import check_storage_class

ROLE_DEFAULTS = Path(__file__).resolve().parents[4] / "roles" / "storage" / "defaults" / "main.yml"
KEYS = (
    "storage_deployment_type",
    "storage_per_unit_storage_throughput",
    "storage_data_compression_type",
    "storage_s3_import_path",
    "storage_s3_export_path",
    "storage_auto_import_policy",
)


def settings(**changes) -> dict:
    """The role's defaults for the checked variables, with ``changes``; as prepare.yml hands them over."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return {**{key: defaults[key] for key in KEYS}, **changes}


def test_the_role_defaults_pass():
    assert check_storage_class(settings()) == []


def test_the_filter_is_the_check():
    assert FilterModule().filters() == {"vllm_storage_preflight": check_storage_class}


# ------------------------------------------------------------------------------------------- S3 link


def test_import_path_on_persistent_2_points_to_data_repository_associations():
    problems = check_storage_class(settings(storage_s3_import_path="s3://models/mistral"))
    assert len(problems) == 1
    line = problems[0]
    assert line.startswith("storage_s3_import_path: FSx takes no S3 link when it creates a PERSISTENT_2 file system")
    assert "data repository association" in line
    assert "storage_deployment_type SCRATCH_1, SCRATCH_2 or PERSISTENT_1" in line
    assert "empty it and" in line


def test_every_s3_setting_on_persistent_2_is_named_in_one_line():
    problems = check_storage_class(
        settings(
            storage_s3_import_path="s3://models/mistral",
            storage_s3_export_path="s3://models/export",
            storage_auto_import_policy="NEW_CHANGED",
        )
    )
    assert problems == [problems[0]]
    assert problems[0].startswith(
        "storage_s3_import_path and storage_s3_export_path and storage_auto_import_policy: FSx takes no S3 link"
    )
    assert "empty them and" in problems[0]


@pytest.mark.parametrize(
    "deployment_type, throughput",
    [("SCRATCH_1", 250), ("SCRATCH_2", 250), ("PERSISTENT_1", 200)],
)
def test_s3_link_is_taken_where_create_file_system_takes_it(deployment_type, throughput):
    assert (
        check_storage_class(
            settings(
                storage_deployment_type=deployment_type,
                storage_per_unit_storage_throughput=throughput,
                storage_s3_import_path="s3://models/mistral",
                storage_s3_export_path="s3://models/export",
                storage_auto_import_policy="NEW_CHANGED_DELETED",
            )
        )
        == []
    )


@pytest.mark.parametrize("path", ["models/mistral", "https://models.s3.amazonaws.com/mistral", "s3://", "s3:///x"])
def test_import_path_must_be_an_s3_path(path):
    problems = check_storage_class(settings(storage_deployment_type="SCRATCH_2", storage_s3_import_path=path))
    assert problems == [
        f"storage_s3_import_path {path!r} is not an S3 path: write it like s3://bucket or s3://bucket/prefix "
        "(at most 4357 characters)"
    ]


def test_export_path_needs_an_import_path():
    problems = check_storage_class(settings(storage_deployment_type="SCRATCH_2", storage_s3_export_path="s3://out/x"))
    assert problems == [
        "storage_s3_export_path needs storage_s3_import_path: FSx exports only to the bucket it imports from; "
        "set an import path in the same bucket or empty storage_s3_export_path"
    ]


def test_export_path_must_be_in_the_import_bucket():
    problems = check_storage_class(
        settings(
            storage_deployment_type="SCRATCH_2",
            storage_s3_import_path="s3://models/mistral",
            storage_s3_export_path="s3://archive/mistral",
        )
    )
    assert problems == [
        "storage_s3_export_path is in bucket archive but storage_s3_import_path is in bucket models; FSx exports "
        "only to the import bucket: use s3://models/<prefix>"
    ]


def test_auto_import_policy_needs_an_import_path():
    problems = check_storage_class(settings(storage_deployment_type="SCRATCH_2", storage_auto_import_policy="NEW"))
    assert problems == [
        "storage_auto_import_policy NEW needs storage_s3_import_path: it says how FSx follows changes in the bucket "
        "it imports from; set an import path or empty storage_auto_import_policy"
    ]


def test_auto_import_policy_must_be_one_fsx_knows():
    problems = check_storage_class(
        settings(
            storage_deployment_type="SCRATCH_2",
            storage_s3_import_path="s3://models",
            storage_auto_import_policy="ALL",
        )
    )
    assert problems == [
        "storage_auto_import_policy 'ALL' is not an FSx policy; use NONE, NEW, NEW_CHANGED or NEW_CHANGED_DELETED"
    ]


# ---------------------------------------------------------------------------------------- throughput


@pytest.mark.parametrize(
    "deployment_type, throughput",
    [("PERSISTENT_1", t) for t in (50, 100, 200)] + [("PERSISTENT_2", t) for t in (125, 250, 500, 1000)],
)
def test_throughputs_the_deployment_type_offers_pass(deployment_type, throughput):
    assert (
        check_storage_class(
            settings(storage_deployment_type=deployment_type, storage_per_unit_storage_throughput=throughput)
        )
        == []
    )


@pytest.mark.parametrize(
    "deployment_type, throughput, expected",
    [
        (
            "PERSISTENT_2",
            200,
            "storage_per_unit_storage_throughput 200 is not offered for PERSISTENT_2; use 125, 250, 500 or 1000 "
            "(MB/s per TiB)",
        ),
        (
            "PERSISTENT_1",
            250,
            "storage_per_unit_storage_throughput 250 is not offered for PERSISTENT_1; use 50, 100 or 200 "
            "(MB/s per TiB)",
        ),
        (
            "PERSISTENT_1",
            40,
            "storage_per_unit_storage_throughput 40 is for PERSISTENT_1 on HDD storage, and this StorageClass creates "
            "SSD file systems; use 50, 100 or 200",
        ),
        (
            "PERSISTENT_2",
            "",
            "storage_per_unit_storage_throughput '' is not a number; PERSISTENT_2 needs one in MB/s per TiB: 125, 250, "
            "500 or 1000",
        ),
    ],
)
def test_throughput_the_deployment_type_does_not_offer_is_refused(deployment_type, throughput, expected):
    problems = check_storage_class(
        settings(storage_deployment_type=deployment_type, storage_per_unit_storage_throughput=throughput)
    )
    assert problems == [expected]


def test_throughput_given_as_text_counts_as_the_number():
    # -e storage_per_unit_storage_throughput=500 arrives as a string.
    assert check_storage_class(settings(storage_per_unit_storage_throughput="500")) == []


@pytest.mark.parametrize("deployment_type", ["SCRATCH_1", "SCRATCH_2"])
def test_scratch_ignores_the_throughput(deployment_type):
    # The template leaves perUnitStorageThroughput out for SCRATCH types, so the default 250 does not reach FSx.
    assert check_storage_class(settings(storage_deployment_type=deployment_type)) == []


# --------------------------------------------------------------------- deployment type and compression


def test_unknown_deployment_type_is_refused_alone():
    problems = check_storage_class(
        settings(storage_deployment_type="PERSISTENT_3", storage_s3_import_path="s3://models/mistral")
    )
    assert problems == [
        "storage_deployment_type 'PERSISTENT_3' is not an FSx for Lustre deployment type; use SCRATCH_1, SCRATCH_2, "
        "PERSISTENT_1 or PERSISTENT_2"
    ]


@pytest.mark.parametrize("compression", ["NONE", "LZ4"])
def test_compression_fsx_offers_passes(compression):
    assert check_storage_class(settings(storage_data_compression_type=compression)) == []


def test_unknown_compression_is_refused():
    problems = check_storage_class(settings(storage_data_compression_type="ZSTD"))
    assert problems == ["storage_data_compression_type 'ZSTD' is not one FSx takes; use LZ4 or NONE"]


def test_several_problems_are_one_line_each():
    problems = check_storage_class(
        settings(
            storage_data_compression_type="gzip",
            storage_per_unit_storage_throughput=100,
            storage_s3_import_path="s3://models/mistral",
        )
    )
    assert [p.split(" ", 1)[0] for p in problems] == [
        "storage_data_compression_type",
        "storage_per_unit_storage_throughput",
        "storage_s3_import_path:",
    ]
    assert all("\n" not in p for p in problems)

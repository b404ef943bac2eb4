"""Tables: KServe's printer columns, kubectl's core columns, Kubernetes' human durations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from marserve.controlplane.tables import describe_age, human_duration, table

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
DURATIONS = [
    (-5, "<invalid>"),
    (0, "0s"),
    (45, "45s"),
    (119, "119s"),
    (120, "2m"),
    (200, "3m20s"),
    (600, "10m"),
    (10_799, "179m"),
    (10_800, "3h"),
    (4 * 3600 + 60, "4h1m"),
    (30 * 3600, "30h"),
    (3 * 86400 + 3600, "3d1h"),
    (400 * 86400, "400d"),
    (3 * 365 * 86400 + 86400, "3y1d"),
    (9 * 365 * 86400, "9y"),
]


@pytest.mark.parametrize(("seconds", "want"), DURATIONS)
def test_human_duration(seconds: int, want: str) -> None:
    assert human_duration(seconds) == want


def isvc(status: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {
            "name": "torchserve",
            "namespace": "default",
            "creationTimestamp": "2026-01-01T11:59:14Z",
            "managedFields": [{}],
        },
        "status": status,
    }


CANARY = {
    "url": "http://torchserve.default.example.com",
    "conditions": [
        {"type": "PredictorReady", "status": "True"},
        {"type": "Ready", "status": "True"},
    ],
    "components": {
        "predictor": {
            "traffic": [
                {"tag": "prev", "percent": 90, "revisionName": "torchserve-predictor-00001"},
                {
                    "latestRevision": True,
                    "percent": 10,
                    "revisionName": "torchserve-predictor-00002",
                },
                {"latestRevision": True, "percent": 0, "revisionName": "ignored-second-match"},
            ]
        }
    },
}
ROWS = [
    ({}, ["torchserve", None, None, None, None, None, None, "46s"]),
    (
        CANARY,
        [
            "torchserve",
            "http://torchserve.default.example.com",
            "True",
            90,
            10,
            "torchserve-predictor-00001",
            "torchserve-predictor-00002",
            "46s",
        ],
    ),
]


@pytest.mark.parametrize(("status", "cells"), ROWS)
def test_isvc_columns(status: dict[str, object], cells: list[object]) -> None:
    out = table("inferenceservices.serving.kserve.io", [isvc(status)], "7", now=NOW)
    assert [c["name"] for c in out["columnDefinitions"]] == [
        "Name",
        "URL",
        "Ready",
        "Prev",
        "Latest",
        "PrevRolledoutRevision",
        "LatestReadyRevision",
        "Age",
    ]
    assert out["rows"][0]["cells"] == cells
    assert out["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert "managedFields" not in out["rows"][0]["object"]["metadata"]
    assert out["metadata"] == {"resourceVersion": "7"}


def test_pod_columns_and_include_object() -> None:
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T11:00:00Z"},
        "spec": {"containers": [{"name": "kserve-container"}, {"name": "queue-proxy"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"ready": True, "restartCount": 2},
                {
                    "ready": False,
                    "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                },
            ],
        },
    }
    out = table("pods", [pod], None, include="Object", now=NOW)
    assert out["rows"][0]["cells"][:5] == ["p", "1/2", "CrashLoopBackOff", "3", "60m"]
    assert out["rows"][0]["object"] is pod
    assert [c["priority"] for c in out["columnDefinitions"]][-2:] == [1, 1]
    assert "object" not in table("pods", [pod], None, include="None", now=NOW)["rows"][0]


EVENT_AGES = [
    ({}, "<unknown>"),
    ({"firstTimestamp": "2026-01-01T11:59:55Z"}, "5s"),
    (
        {
            "firstTimestamp": "2026-01-01T11:50:00Z",
            "lastTimestamp": "2026-01-01T11:58:00Z",
            "count": 3,
        },
        "2m (x3 over 10m)",
    ),
]


@pytest.mark.parametrize(("event", "want"), EVENT_AGES)
def test_describe_age(event: dict[str, object], want: str) -> None:
    assert describe_age(event, NOW) == want

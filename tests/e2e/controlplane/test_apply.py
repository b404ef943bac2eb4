"""Server-side apply over HTTP: create (201), partial configurations, conflicts by field."""

from __future__ import annotations

import orjson

from tests.e2e.controlplane.conftest import Controller
from tests.e2e.controlplane.test_watch import BASE, isvc


def test_server_side_apply_of_a_partial_configuration(controller: Controller) -> None:
    """A manager may apply just the fields it cares about (here a label) next to another's."""
    headers = {"Content-Type": "application/apply-patch+yaml"}
    with controller.client() as c:
        full = orjson.dumps(isvc("ssa", "ml"))
        first = c.patch(
            f"{BASE}/ssa", params={"fieldManager": "owner"}, content=full, headers=headers
        )
        assert first.status_code == 201, first.text
        partial = orjson.dumps(
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "ssa", "labels": {"cost": "low"}},
            }
        )
        second = c.patch(
            f"{BASE}/ssa", params={"fieldManager": "labeller"}, content=partial, headers=headers
        )
        assert second.status_code == 200, second.text
        obj = second.json()
        assert obj["metadata"]["labels"] == {"team": "ml", "cost": "low"}
        assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://b"
        managers = {m["manager"]: m["operation"] for m in obj["metadata"]["managedFields"]}
        assert managers == {"owner": "Apply", "labeller": "Apply"}
        clash = orjson.dumps({**isvc("ssa", "ops")})
        conflict = c.patch(
            f"{BASE}/ssa", params={"fieldManager": "labeller"}, content=clash, headers=headers
        )
        assert conflict.status_code == 409
        cause = conflict.json()["details"]["causes"][0]
        assert cause == {
            "reason": "FieldManagerConflict",
            "field": ".metadata.labels.team",
            "message": 'conflict with "owner" using serving.kserve.io/v1beta1',
        }

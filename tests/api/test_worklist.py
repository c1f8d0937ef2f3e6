"""The database behind the API: results answer identically after a restart; worklist, review, users and
roles, the audit trail; no patient identifier reaches the logs."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from frontend_helpers import dicom_bytes, tiny_service

from pneumo.api import ApiSettings, create_app
from pneumo.store import open_database
from pneumo.store.analyses import get_analysis
from pneumo.store.users import add_user

FOLLOW_UPS = ("", "/image.png", "/heatmap.png", "/overlay.png", "/overlay.png?heatmap=true", "/submission.csv")


def app_for(model_dir: Path, data_dir: Path, **settings: object):
    return create_app(ApiSettings(model_dir=model_dir, data_dir=data_dir, **settings), service_factory=tiny_service)


def upload(client: TestClient, data: bytes, name: str = "x.dcm", headers: dict | None = None, **params: object):
    return client.post("/v1/predictions", params=params, headers=headers or {},
                       files={"file": (name, data, "application/octet-stream")})


def phi_dicom(source: Path, name: str, patient_id: str) -> bytes:
    """A real radiograph (the content check refuses synthetic images) carrying the given identifiers."""
    ds = pydicom.dcmread(source)
    ds.PatientName, ds.PatientID = name, patient_id
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_results_answer_identically_after_a_restart(model_dir: Path, rsna_cases: dict, tmp_path: Path,
                                                    backend: str, request: pytest.FixtureRequest) -> None:
    database = None if backend == "sqlite" else request.getfixturevalue("postgres_url")
    settings = {"labels": rsna_cases["labels"], "database": database}
    before: dict[str, dict[str, bytes]] = {}
    with TestClient(app_for(model_dir, tmp_path, **settings)) as client:
        for path, model in ((rsna_cases["positive"], "ensemble"), (rsna_cases["negative"], "chexnet")):
            response = upload(client, path.read_bytes(), path.name, model=model)
            assert response.status_code == 200, response.text
            rid = response.json()["id"]
            before[rid] = {suffix: client.get(f"/v1/predictions/{rid}{suffix}").content for suffix in FOLLOW_UPS}
            assert before[rid][""] == client.get(f"/v1/predictions/{rid}").content
    with TestClient(app_for(model_dir, tmp_path, **settings)) as client:  # a new process would see the same
        assert len(client.app.state.pneumo.store) == 0  # nothing cached: everything below comes from the database
        for rid, answers in before.items():
            for suffix, content in answers.items():
                response = client.get(f"/v1/predictions/{rid}{suffix}")
                assert response.status_code == 200 and response.content == content, suffix
    db = open_database(database, tmp_path)
    try:
        for rid in before:
            row = get_analysis(db, rid)
            assert row.sop_uid and row.study_uid and row.model and row.model_version and row.requested_by == "anonymous"
            assert len(row.file_sha256) == 64 and row.thresholds["probability_threshold"] == 0.5
    finally:
        db.close()


def test_worklist_pages_filters_and_reviews(model_dir: Path, tmp_path: Path) -> None:
    with TestClient(app_for(model_dir, tmp_path)) as client:
        ids = [upload(client, dicom_bytes(patient_id=f"W{i}"), model="chexnet").json()["id"] for i in range(5)]
        first = client.get("/v1/predictions", params={"limit": 2}).json()
        assert [i["id"] for i in first["items"]] == ids[::-1][:2] and first["next_cursor"]
        rest = client.get("/v1/predictions", params={"limit": 10, "cursor": first["next_cursor"]}).json()
        assert [i["id"] for i in rest["items"]] == ids[::-1][2:] and rest["next_cursor"] is None
        item = first["items"][0]
        assert item["review_status"] == "unreviewed" and item["model"] == "chexnet" and "links" in item

        response = client.post(f"/v1/predictions/{ids[1]}/review",
                               json={"decision": "corrected", "boxes": [{"x": 5, "y": 6, "width": 20, "height": 10}],
                                     "comment": "right lower zone"})
        assert response.status_code == 201, response.text
        assert response.json()["boxes"] == [{"x": 5.0, "y": 6.0, "width": 20.0, "height": 10.0}]
        got = client.get(f"/v1/predictions/{ids[1]}").json()
        assert got["review_status"] == "corrected" and got["review"]["comment"] == "right lower zone"
        assert got["review"]["reviewer"] == "anonymous"
        assert [i["id"] for i in client.get("/v1/predictions?status=reviewed").json()["items"]] == [ids[1]]
        assert ids[1] not in [i["id"] for i in client.get("/v1/predictions?status=unreviewed").json()["items"]]
        flagged = {i["id"]: i["flagged"] for i in client.get("/v1/predictions?flagged=false").json()["items"]}
        assert all(v is False for v in flagged.values())

        bad = [
            {"decision": "corrected"},  # no boxes
            {"decision": "corrected", "boxes": [{"x": 70, "y": 0, "width": 20, "height": 10}]},  # outside 64 px
            {"decision": "perhaps"},
            {"decision": "agree", "extra": 1},
        ]
        for body in bad:
            response = client.post(f"/v1/predictions/{ids[0]}/review", json=body)
            assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid_review", "invalid_request")
        assert client.get(f"/v1/predictions/{ids[0]}").json()["review_status"] == "unreviewed"
        assert client.post(f"/v1/predictions/{'0' * 32}/review", json={"decision": "agree"}).status_code == 404
        assert client.get("/v1/predictions?status=nonsense").status_code == 400


def test_users_roles_and_the_audit_trail(model_dir: Path, tmp_path: Path) -> None:
    db = open_database(None, tmp_path)
    _, admin_key = add_user(db, "root-admin", "admin", actor="cli")
    db.close()
    admin = {"X-API-Key": admin_key}
    with TestClient(app_for(model_dir, tmp_path, api_key="shared-secret")) as client:
        assert client.get("/v1/predictions").status_code == 401  # users exist: a key is needed
        assert client.get("/v1/me", headers=admin).json() == {"name": "root-admin", "role": "admin"}
        created = client.post("/v1/users", json={"name": "rita", "role": "reader"}, headers=admin)
        assert created.status_code == 201
        reader = {"Authorization": f"Bearer {created.json()['api_key']}"}
        assert client.post("/v1/users", json={"name": "rita"}, headers=admin).status_code == 409

        rid = upload(client, dicom_bytes(), model="chexnet", headers=reader).json()["id"]
        assert client.get(f"/v1/predictions/{rid}/image.png", headers=reader).status_code == 200
        assert client.post(f"/v1/predictions/{rid}/review", json={"decision": "agree"}, headers=reader).status_code == 201
        for path in ("/v1/audit", "/v1/users"):
            assert client.get(path, headers=reader).status_code == 403
        assert client.post("/v1/users", json={"name": "eve", "role": "admin"}, headers=reader).status_code == 403
        assert client.get("/v1/me", headers={"X-API-Key": "shared-secret"}).json()["role"] == "admin"  # simple option

        events = client.get("/v1/audit", headers=admin).json()["events"]
        trail = [(e["actor"], e["action"], e["result_id"]) for e in reversed(events)]
        assert trail == [("cli", "user_add", None), ("root-admin", "user_add", None), ("rita", "analyse", rid),
                         ("rita", "view", rid), ("rita", "review", rid)]
        page = client.get("/v1/audit", params={"limit": 2}, headers=admin).json()
        older = client.get("/v1/audit", params={"limit": 10, "cursor": page["next_cursor"]}, headers=admin).json()
        assert [e["seq"] for e in page["events"] + older["events"]] == [e["seq"] for e in events]
        assert client.get("/v1/audit", params={"action": "review"}, headers=admin).json()["events"][0]["actor"] == "rita"

        assert client.post("/v1/users/rita/disable", headers=admin).json()["disabled"] is True
        assert client.get("/v1/predictions", headers=reader).status_code == 401  # at once
        assert client.post("/v1/users/ghost/disable", headers=admin).status_code == 404
        assert [u["name"] for u in client.get("/v1/users", headers=admin).json()["users"]] == ["rita", "root-admin"]
        assert "api_key" not in client.get("/v1/users", headers=admin).text


def test_patient_identifiers_never_reach_the_logs(model_dir: Path, rsna_cases: dict, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    name, patient_id = "DOE^JANE^Q", "PID-7731-SECRET"
    caplog.set_level(logging.DEBUG)
    with TestClient(app_for(model_dir, tmp_path)) as client:
        response = upload(client, phi_dicom(rsna_cases["negative"], name, patient_id), name="scan.dcm", model="chexnet")
        assert response.status_code == 200, response.text
        rid = response.json()["id"]
        for suffix in FOLLOW_UPS:
            client.get(f"/v1/predictions/{rid}{suffix}")
        client.post(f"/v1/predictions/{rid}/review", json={"decision": "disagree", "comment": "fine"})
        audit = client.get("/v1/audit").text
        assert client.get(f"/v1/predictions/{rid}/submission.csv").text.splitlines()[1].startswith(patient_id)
    logged = caplog.text
    assert rid in logged  # the logs were captured (the result id is logged)
    for identifier in (name, patient_id, "DOE", "JANE", "7731"):
        assert identifier not in logged and identifier not in audit

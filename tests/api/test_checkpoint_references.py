"""GET /studies/{id}/checkpoints: keyset pages of the checkpoints each trial still needs."""

from __future__ import annotations

from hpo_service.client import HpoClient
from tests.chaos.inprocess import running_app, sdk_client
from tests.db.test_protocol_contract import make_spec


def test_pages_follow_next_after_to_the_end(database_url: str) -> None:
    with running_app(database_url) as (app, token):
        study = app.post("/api/v1/studies", json=make_spec().model_dump(mode="json")).json()
        client: HpoClient = sdk_client(app, token)
        for n in range(5):
            lease = client.lease(f"w{n}", wait_s=0, studies=[study["id"]])
            assert lease is not None
            client.report(lease["trial_id"], lease["lease_token"], [{"step": 1, "metrics": {"loss": 1.0 / (n + 1)}}])
            client.complete(lease["trial_id"], lease["lease_token"], {"loss": 1.0 / (n + 1)},
                            f"file:///ckpt/study-{study['id']}/trial-{lease['trial_id']}/budget-1-a1")

        seen, after, pages = [], 0, 0
        while after is not None:
            page = client.checkpoint_references(study["id"], after=after, limit=2)
            seen += page["items"]
            after, pages = page["next_after"], pages + 1
        assert pages == 3 and len(seen) == 5
        assert all(row["uris"] == [f"file:///ckpt/study-{study['id']}/trial-{row['trial_id']}/budget-1-a1"]
                   for row in seen)

        assert app.get(f"/api/v1/studies/{study['id']}/checkpoints", params={"limit": 0}).status_code == 422
        assert app.get("/api/v1/studies/999/checkpoints").status_code == 404

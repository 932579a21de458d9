from __future__ import annotations


def test_organization_detail(api, organization):
    response = api.get("/api/v1/organization")
    assert response.status_code == 200, response.content
    assert response.json()["slug"] == "acme"

"""The Python client's saved views against a live server."""

from __future__ import annotations

import pytest

from curation.models import MetadataField
from curation.services import add_samples
from winnow.accounts.models import ApiToken
from winnow.client import Client, WinnowError

pytestmark = pytest.mark.django_db(transaction=True)


def test_save_open_rename_tag_and_delete_a_view(live_server, owner, dataset):
    add_samples(dataset, [{"file_name": f"f{i}.jpg", "metadata": {"speed": i}} for i in range(10)])
    MetadataField.objects.create(dataset=dataset, path="speed", type="int")
    with Client(token=ApiToken.issue(owner, "t")[1], server=live_server.url) as client:
        client.dataset_id = dataset.id
        fast = {"conditions": [{"path": "speed", "op": "gt", "value": 7}]}
        view = client.save_view("fast", filter=fast, sort="-speed")
        assert client.get_view("fast")["id"] == view["id"]
        assert client.update_view("fast", name="faster")["name"] == "faster"
        assert [v["name"] for v in client.list_views()] == ["faster"]
        tag = client.tag_from_view("faster", "fast tag")
        assert tag["count"] == 2
        # A view exports in its sort (-speed), not in idx order.
        assert client.export_view("faster") == ["f9.jpg", "f8.jpg"]
        assert [row["file_name"] for row in client.export_view("faster", "json")] == ["f9.jpg", "f8.jpg"]
        slow = {"conditions": [{"path": "speed", "op": "lt", "value": 2}]}
        assert client.export_filter(slow) == ["f0.jpg", "f1.jpg"]
        assert client.export_filter(slow, sort="-speed") == ["f1.jpg", "f0.jpg"]
        assert len(client.export_filter()) == 10
        assert client.export_filter(slow, "csv").startswith("file_name,sample_id,idx")
        with pytest.raises(WinnowError, match="already exists"):
            client.save_view("Faster")
        client.delete_view("faster")
        assert client.list_views() == []


def test_the_cli_saves_lists_tags_and_deletes_views_and_prints_the_distance_scale(live_server, owner, dataset):
    import numpy as np

    from tests.browser.data import Api, embeddings_csv
    from tests.client.test_client_cli import winnow

    names = [f"f{i}.jpg" for i in range(10)]
    add_samples(dataset, [{"file_name": n, "metadata": {"speed": i}} for i, n in enumerate(names)])
    token = ApiToken.issue(owner, "cli")[1]
    x = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    Api(live_server.url, token).call(
        "POST",
        f"/datasets/{dataset.id}/embeddings",
        data={"name": "default"},
        files={"file": ("e.csv", embeddings_csv(names, x), "text/csv")},
    )
    run = lambda *args: winnow(live_server, token, *args, "--dataset-id", dataset.id)  # noqa: E731
    saved = run("views", "save", "--name", "early", "--filter", '{"file_name": "f1"}')
    assert saved.returncode == 0, saved.stderr
    listed = run("views", "list")
    assert "early" in listed.stdout and '"file_name": "f1"' in listed.stdout
    tagged = run("views", "tag", "--name", "early", "--tag-name", "early tag")
    assert tagged.returncode == 0 and "1 sample" in tagged.stdout and "samples" not in tagged.stdout
    bad = run("views", "save", "--name", "x", "--filter", "{nope")
    assert bad.returncode == 1 and "--filter is not valid JSON" in bad.stderr
    assert run("views", "delete", "--name", "early").returncode == 0
    assert run("views", "list").stdout.strip() == ""
    scale = run("distances")
    assert scale.returncode == 0, scale.stderr
    assert "nearest neighbour" in scale.stdout and "p50" in scale.stdout

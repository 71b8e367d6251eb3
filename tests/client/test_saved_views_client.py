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
        with pytest.raises(WinnowError, match="already exists"):
            client.save_view("Faster")
        client.delete_view("faster")
        assert client.list_views() == []

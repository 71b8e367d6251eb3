"""On the embedded default (SQLite): the text filters fold case beyond ASCII (a registered lower()), match no
number, take % and _ as plain characters; and a dataset name is unique per owner in any case."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from curation import columns
from curation.filters import parse_conditions, select_samples
from curation.services import DatasetNameTaken, add_samples, create_dataset

user = get_user_model().objects.create_user("lite", password="x")
ds = create_dataset(user, "Lite", "meta")
out = {}
try:
    create_dataset(user, "LITE", "meta")
    out["duplicate"] = "accepted"
except DatasetNameTaken as exc:
    out["duplicate"] = str(exc)
add_samples(ds, [
    {"file_name": "a", "metadata": {"p": "Straße ÖLBERG"}},
    {"file_name": "b", "metadata": {"p": "ölberg"}},
    {"file_name": "c", "metadata": {"p": 12}},
    {"file_name": "d", "metadata": {"p": "50% off"}},
])
for c in ["p:icontains:ölberg", "p:ieq:ÖLBERG", 'p:iin:["ölBERG","x"]', "p:contains:ÖL", "p:contains:12",
          "p:contains:%", "p:icontains:_"]:
    out[c] = sorted(select_samples(ds, conditions=parse_conditions([c])).values_list("file_name", flat=True))
out["mask"] = columns.filter_mask(ds, conditions=parse_conditions(["p:icontains:öl"])).hex()
print("RESULT " + json.dumps(out))
"""


def test_text_filters_and_unique_names_on_sqlite(tmp_path):
    drop = {"CELERY_BROKER_URL", "AWS_STORAGE_BUCKET_NAME", "WINNOW_REQUIRE_SERVICES"}
    env = {k: v for k, v in os.environ.items() if k not in drop | {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    env["WINNOW_VAR_DIR"] = str(tmp_path / "var")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'lite.sqlite3'}"
    env["SECRET_KEY"] = "embedded-text-filters-test"
    manage = [sys.executable, "manage.py"]
    ran = subprocess.run(
        [*manage, "shell", "-c", SCRIPT], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    line = next(x for x in ran.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert out.pop("duplicate") == "lite already has a dataset named 'LITE'; choose another name"
    assert out == {
        "p:icontains:ölberg": ["a", "b"],
        "p:ieq:ÖLBERG": ["b"],
        'p:iin:["ölBERG","x"]': ["b"],
        "p:contains:ÖL": ["a"],
        "p:contains:12": [],
        "p:contains:%": ["d"],
        "p:icontains:_": [],
        "mask": "03",
    }

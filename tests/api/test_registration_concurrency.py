"""Registration under concurrency, on real PostgreSQL: idx stays 0..N-1, gap-free and unique.

Threads register into one dataset at once (each thread has its own database session), with file
names that overlap between threads, batches that are rejected before anything is written, and
batches that fail inside the database after their rows were numbered. Afterwards the dataset holds
every name once, with idx exactly 0..N-1, and initial-tag counts N.
"""

import json
import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.http import Http404

from curation import bitmask, services
from curation.models import INITIAL_TAG, Dataset, Sample, Tag

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def _run_threads(targets) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def run(target):
        try:
            start.wait()
            target()
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a registering thread hangs"
    return errors


def _entries(names):
    return [{"file_name": name, "width": 4, "height": 3, "metadata": {"n": name, "w": {"t": 1.5}}} for name in names]


def assert_dense(dataset, names: set[str]) -> None:
    rows = list(Sample.objects.filter(dataset=dataset).order_by("idx").values_list("idx", "file_name"))
    n = len(names)
    assert [idx for idx, _ in rows] == list(range(n)), "idx is not exactly 0..N-1"
    assert sorted(name for _, name in rows) == sorted(names), "file names missing or doubled"
    assert Dataset.objects.get(pk=dataset.pk).next_idx == n
    tag = Tag.objects.get(dataset=dataset, name=INITIAL_TAG)
    assert tag.count == n and bytes(tag.bitmask) == bitmask.from_indices(range(n))
    # The stored count is right too, for readers that go around the model.
    assert Tag.objects.filter(pk=tag.pk).values_list("count", flat=True).get() == n


def _register_plainly(dataset, entries):
    """register_samples as the API calls it for a plainly valid body: entries decoded by parse_registration."""
    body = json.dumps({"samples": entries}).encode()
    parsed = services.parse_registration(body)
    assert parsed is not None, "the fast path refused a plainly valid body"
    return services.register_samples(dataset, parsed.samples, source_json=body.decode())


@pytest.mark.parametrize("plain", [False, True], ids=["checked-entries", "parse_registration"])
def test_parallel_batches_keep_idx_dense_and_names_unique(dataset, plain):
    threads, batches, size = 6, 8, 40
    wanted: set[str] = set()
    plans = []
    for t in range(threads):
        plan = []
        for b in range(batches):
            # Half of each batch is the thread's own, half is shared with the next thread: the same
            # names arrive from two sessions at once and must land once.
            own = [f"t{t}/b{b}/{i}.jpg" for i in range(size // 2)]
            shared = [f"shared/{(t + k) % threads}-{b}-{i}.jpg" for k in (0,) for i in range(size // 2)]
            plan.append(own + shared)
            wanted.update(own + shared)
        plans.append(plan)
    answers = []

    def register(plan):
        def target():
            for names in plan:
                if plain:
                    answers.append(_register_plainly(dataset, _entries(names)))
                else:
                    answers.append(services.register_samples(dataset, _entries(names)))

        return target

    errors = _run_threads([register(plan) for plan in plans])
    assert not errors, errors
    assert_dense(dataset, wanted)
    assert sum(a.created for a in answers) == len(wanted)
    assert sum(a.created + len(a.skipped) for a in answers) == threads * batches * size
    # Every answer's ids are the ids the names hold now, whoever registered them.
    held = dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "id"))
    for plan_answers in answers:
        assert len(set(plan_answers.ids)) == len(plan_answers.ids)
    assert all(i in held.values() for a in answers for i in a.ids)


def test_failing_batches_leave_no_gap(dataset):
    """Rejected batches, a batch whose transaction fails after its rows were numbered, and a batch the
    database refuses (a CHECK constraint) part-way, all next to batches that succeed."""
    wanted: set[str] = set()
    good_plans = [[[f"g{t}/{b}/{i}.jpg" for i in range(30)] for b in range(6)] for t in range(3)]
    for plan in good_plans:
        for names in plan:
            wanted.update(names)

    def good(plan):
        def target():
            for names in plan:
                services.register_samples(dataset, _entries(names))

        return target

    def rejected():
        for b in range(6):
            entries = _entries([f"bad/{b}/{i}.jpg" for i in range(30)])
            entries[17]["width"] = "wide"
            with pytest.raises(services.InvalidEntries, match="entry 17"):
                services.register_samples(dataset, entries)

    def fails_after_numbering():
        for b in range(6):
            with pytest.raises(Boom), transaction.atomic():
                services.register_samples(dataset, _entries([f"lost/{b}/{i}.jpg" for i in range(30)]))
                raise Boom  # e.g. the request dies before its commit

    def refused_by_database():
        for b in range(6):
            rows = [{"file_name": f"refused/{b}/{i}.jpg", "width": 5} for i in range(30)]
            rows[20]["width"] = -1  # add_samples trusts its caller: the database's CHECK refuses it, mid-insert
            with pytest.raises(IntegrityError):
                services.add_samples(dataset, rows)

    errors = _run_threads([*(good(plan) for plan in good_plans), rejected, fails_after_numbering, refused_by_database])
    assert not errors, errors
    assert_dense(dataset, wanted)
    assert not Sample.objects.filter(dataset=dataset, file_name__regex=r"^(bad|lost|refused)/").exists()


def test_a_name_registered_meanwhile_is_looked_up_again_under_the_lock(dataset, monkeypatch):
    """Staging saw the name as new; a parallel batch registered it before the lock: no duplicate, no gap."""
    services.register_samples(dataset, _entries(["a.jpg"]))
    real = services._sql
    sneaked = []

    def sql(template, **parts):
        text = real(template, **parts)
        if template is services._INSERT_SQL and not sneaked:
            # Between staging and the lock, another session registers c.jpg.
            sneaked.append(True)
            other = threading.Thread(
                target=lambda: (services.register_samples(dataset, _entries(["c.jpg"])), connections.close_all())
            )
            other.start()
            other.join()
        return text

    monkeypatch.setattr(services, "_sql", sql)
    result = services.register_samples(dataset, _entries(["b.jpg", "c.jpg", "d.jpg"]))
    assert sneaked and result.created == 2 and result.skipped == ["c.jpg"]
    assert_dense(dataset, {"a.jpg", "b.jpg", "c.jpg", "d.jpg"})
    held = dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "id"))
    assert result.ids == [held["b.jpg"], held["c.jpg"], held["d.jpg"]]


def test_the_orm_path_numbers_and_skips_the_same_way(dataset, monkeypatch):
    """What SQLite (the embedded default) runs, exercised here by pretending the database is not PostgreSQL."""
    monkeypatch.setattr(connection, "vendor", "sqlite")
    first = services.register_samples(dataset, _entries(["a.jpg", "b.jpg"]))
    again = services.register_samples(dataset, _entries(["b.jpg", "c.jpg"]))
    assert (first.created, again.created, again.skipped) == (2, 1, ["b.jpg"])
    assert again.ids[0] == first.ids[1]
    replaced = services.register_samples(
        dataset, [{"file_name": "a.jpg", "width": 9, "metadata": {"new": True}}], overwrite=True
    )
    assert (replaced.created, replaced.replaced, replaced.ids) == (0, 1, [first.ids[0]])
    a = Sample.objects.get(dataset=dataset, file_name="a.jpg")
    assert (a.idx, a.width, a.height, a.metadata) == (0, 9, None, {"new": True})
    monkeypatch.undo()
    assert_dense(dataset, {"a.jpg", "b.jpg", "c.jpg"})


def test_a_dataset_deleted_meanwhile_gets_no_samples(dataset):
    """Samples have no database foreign key to their dataset: the insert itself must refuse a deleted one."""
    services.register_samples(dataset, _entries(["before.jpg"]))
    stale = Dataset.objects.get(pk=dataset.pk)
    Dataset.objects.filter(pk=dataset.pk).delete()
    with pytest.raises(Http404):
        services.register_samples(stale, _entries(["a.jpg", "b.jpg"]))
    assert not Sample.objects.filter(dataset_id=dataset.pk).exists()


def _scans_of(plan: dict, table: str):
    if plan.get("Relation Name") == table:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans_of(child, table)


def test_a_batch_reads_the_datasets_names_in_one_scan_not_one_per_entry(dataset):
    """The staging statement finds the batch's names already registered with one scan of the samples.

    A lookup per entry, planned while the table is small, walks the dataset's (dataset_id, idx) index
    range once per entry; with parallel batches adding rows meanwhile, the first batch of a 1M
    registration took 145 s that way. Whatever index the planner picks, the samples are read once.
    """
    services.register_samples(dataset, _entries([f"old/{i}.jpg" for i in range(200)]))
    names = [f"old/{i}.jpg" for i in range(0, 200, 10)] + [f"new/{i}.jpg" for i in range(100)]
    body = json.dumps({"samples": _entries(names)})
    params = {"body": body, "ids": "\x1f".join(f"{i:024x}" for i in range(len(names))), "dataset": dataset.pk}
    create, insert = services._sql(services._STAGE_SQL).split("DELETE FROM winnow_sample_stage;")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(create)
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + insert, params)
        plan = cursor.fetchone()[0][0]["Plan"]
        scans = list(_scans_of(plan, Sample._meta.db_table))
        assert scans, "the statement does not read the samples"
        assert all(scan["Actual Loops"] == 1 for scan in scans), [scan["Actual Loops"] for scan in scans]
        cursor.execute("SELECT file_name, existing FROM winnow_sample_stage ORDER BY o")
        staged = cursor.fetchall()
    held = dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "id"))
    assert staged == [(name, held.get(name)) for name in names]

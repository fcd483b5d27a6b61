"""The store's latency tables and fit results (migration 0004, bench/store_fit.py): round trips, upsert by
key, newest-first listings, the in-place upgrade of an 0003 store and a full disk. SQLite and PostgreSQL.

The tables and fits here are unit-test inputs built by hand, not recorded output of a fit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sqlite3

import pytest
import sqlalchemy as sa

from edgebench.bench import store as store_mod
from edgebench.bench.contracts.files import CannotWrite
from edgebench.bench.contracts.fit import (FitResult, FitStep, Group, LatencyPoint, LatencyTable, Measured, Plan,
                                           Sensitivity, to_data)
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.store import HEAD, CellRecord, RunRecord, Store

UTC = dt.timezone.utc


def table(key: str = "k1", model: str = "resnet20", target: str = "local", created: str = "2026-12-01T10:00:00+00:00",
          dense: float = 2.0) -> LatencyTable:
    points = [LatencyPoint(None, 64, dense, dense * 1.1, 200, 3, "resnet20/dense/onnxruntime/fp32/b1/local")]
    points += [LatencyPoint("layer1", w, dense * (0.5 + w / 32), dense, 200, 3, f"cell-l1-{w}", flags=["contended"] if w == 8 else [])
               for w in (8, 12, 16)]
    return LatencyTable(key, target, {"machine": "x86_64", "cpu_model": "Test CPU", "onnxruntime": "1.32.0"}, model, "sha256:abc",
                        "onnxruntime", "1.32.0", "fp32", 1, 2, 4, {"group": "layer1", "widths": {"12": 1.6, "16": 2.0}, "reason": "multiples of 4"},
                        dense_ms=dense, narrowest_ms=dense * 0.5, points=points, uniform={"0.5": dense * 0.6}, run_id="run-1",
                        created_at=created, build_s=12.5)


def fit_result(fit_id: str = "fit-1", created: str = "2026-12-01T11:00:00+00:00", status: str = "fitted") -> FitResult:
    dense = Measured("dense", 2.0, 1.95, 2.05, 2.2, 0.91, "c-dense", "run-2", processes=3)
    fitted = Measured("fit-resnet20-1ms", 0.98, 0.96, 1.01, 1.1, 0.90, "c-fit", "run-2", processes=3, flags=["contended"], detail={"epochs": 3})
    return FitResult(fit_id, "resnet20", "local", "onnxruntime", "fp32", 1, "0.5x", 1.0, status,
                     groups=[Group("layer1", 16, ["layer1.0.conv1", "layer1.0.conv2"])], table=table(), table_reused=True,
                     sensitivity=[Sensitivity("layer1", 8, 0.4, 3.5)], sensitivity_reused=False,
                     plans=[Plan("knapsack", {"layer1": 8}, 1.0, 0.4), Plan("greedy", {"layer1": 12}, 1.2, 0.2, feasible=False)],
                     steps=[FitStep(1, 1.5, {"layer1": 12}, 1.5, 1.55, 1.7, "c-step1", correction=0.97)],
                     recipe_name="fit-resnet20-1ms", recipe_path="/tmp/fit.yaml", dense=dense, fitted=fitted,
                     max_accuracy_drop_pp=1.0, settings={"steps": 2}, phases_s={"table": 30.0}, created_at=created)


def test_a_latency_table_round_trips_and_is_replaced_by_key(store_url):
    s = Store(store_url)
    assert s.latency_table("k1") is None
    t = table()
    s.save_latency_table(t)
    assert s.latency_table("k1") == t
    assert s.latency_table("k1").latency("layer1", 12) == t.latency("layer1", 12)
    newer = dataclasses.replace(t, dense_ms=3.0, created_at="2026-12-02T10:00:00+00:00")
    s.save_latency_table(newer)  # same key: replaces, does not add
    assert s.latency_tables() == [newer]


def test_latency_tables_are_newest_first_and_filtered(store_url):
    s = Store(store_url)
    s.save_latency_table(table("a", created="2026-12-01T10:00:00+00:00"))
    s.save_latency_table(table("b", created="2026-12-03T10:00:00+00:00", target="pi5"))
    s.save_latency_table(table("c", created="2026-12-02T10:00:00+00:00", model="mobilenet"))
    assert [t.key for t in s.latency_tables()] == ["b", "c", "a"]
    assert [t.key for t in s.latency_tables(model="resnet20")] == ["b", "a"]
    assert [t.key for t in s.latency_tables(target="local")] == ["c", "a"]
    assert [t.key for t in s.latency_tables(model="resnet20", target="pi5")] == ["b"]
    assert s.latency_tables(model="nope") == []


def test_an_empty_created_at_is_stored_as_the_time_of_saving(store_url):
    s = Store(store_url)
    t = table(created="")
    before = dt.datetime.now(UTC)
    s.save_latency_table(t)
    assert t.created_at == ""  # the caller's object is left as it is
    got = dt.datetime.fromisoformat(s.latency_table("k1").created_at)
    assert before - dt.timedelta(seconds=1) <= got <= dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    s.save_fit(fit_result("f", created=""))
    assert s.fit("f").created_at


def test_a_fit_round_trips_with_every_nested_part(store_url):
    s = Store(store_url)
    assert s.fit("fit-1") is None
    r = fit_result()
    s.save_fit(r)
    got = s.fit("fit-1")
    assert got == r and to_data(got) == to_data(r)
    assert isinstance(got.table.points[0], LatencyPoint) and isinstance(got.steps[0], FitStep) and isinstance(got.fitted, Measured)
    assert got.steps[0].error == pytest.approx((1.5 - 1.55) / 1.55)
    assert got.plans[1].feasible is False and got.uniform is None


def test_fits_are_newest_first_limited_and_replaced_by_id(store_url):
    s = Store(store_url)
    for i in range(4):
        s.save_fit(fit_result(f"f{i}", created=f"2026-12-0{i + 1}T10:00:00+00:00", status="over-budget"))
    assert [f.id for f in s.fits()] == ["f3", "f2", "f1", "f0"]
    assert [f.id for f in s.fits(limit=2)] == ["f3", "f2"]
    s.save_fit(fit_result("f0", created="2026-12-01T10:00:00+00:00", status="fitted"))  # the same fit, finished
    assert len(s.fits()) == 4 and s.fit("f0").status == "fitted"
    with s.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM fits WHERE id = 'f0'")).scalar() == "fitted"


def test_an_0003_store_gains_the_tables_in_place_and_keeps_its_runs(store_url):
    """A store at revision 0003 (made by downgrading: the same schema 0003 created) with a run, a cell and
    its samples: opening it adds latency_tables and fits, schema_version 4, and nothing stored is lost."""
    from alembic import command

    s = Store(store_url)
    s.create_run(RunRecord("r", "s", "/x/s.yaml", "models: [m]\n", "finished", dt.datetime(2026, 1, 1, tzinfo=UTC)))
    s.add_cell("r", CellRecord("m/dense/onnxruntime/fp32/b1/local", "m", "dense", "onnxruntime", "fp32", 1, "local", "ok",
                               result=CellResult("ok", samples_ns=[1, 2, 3])))
    with s.engine.begin() as conn:
        command.downgrade(store_mod._alembic_config(conn), "0003")
    with s.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0003"
        assert conn.execute(sa.text("SELECT value FROM edgebench_meta WHERE key = 'schema_version'")).scalar() == "3"
    assert not names & {"latency_tables", "fits"} and {"runs", "cells", "samples"} <= names
    s.engine.dispose()
    s2 = Store(store_url)
    assert s2.revision() == HEAD  # 0004 and every later revision
    with s2.engine.connect() as conn:
        assert {"latency_tables", "fits"} <= set(sa.inspect(conn).get_table_names())
        assert conn.execute(sa.text("SELECT value FROM edgebench_meta WHERE key = 'schema_version'")).scalar() == str(store_mod.SCHEMA_VERSION)
    assert [r.id for r in s2.runs()] == ["r"] and [c.result.samples_ns for c in s2.cells("r")] == [[1, 2, 3]]
    s2.save_latency_table(table())
    s2.save_fit(fit_result())
    assert s2.latency_table("k1") == table() and s2.fit("fit-1") == fit_result()


@pytest.mark.parametrize("write", ["table", "fit"])
def test_a_full_disk_while_saving_is_cannot_write_naming_the_store(tmp_path, monkeypatch, write):
    s = Store(tmp_path / "edgebench.sqlite")
    full = sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))

    def refuse(*_a, **_k):
        raise full

    monkeypatch.setattr(sa.engine.Connection, "execute", refuse)
    with pytest.raises(CannotWrite) as err:
        s.save_latency_table(table()) if write == "table" else s.save_fit(fit_result())
    assert err.value.path == str(tmp_path / "edgebench.sqlite") and "database or disk is full" in str(err.value)
    monkeypatch.undo()
    assert s.latency_tables() == [] and s.fits() == []  # nothing half-written


def test_concurrent_saves_of_one_key_all_succeed(store_url):
    """Several fits (threads here; boards in practice) saving the same table and fit at once: an upsert,
    never a unique-key error, and one row each at the end."""
    from concurrent.futures import ThreadPoolExecutor

    s = Store(store_url)
    s.save_latency_table(table())  # the schema exists before the race starts

    def save(i: int) -> None:
        s.save_latency_table(dataclasses.replace(table(), build_s=float(i)))
        s.save_fit(fit_result(status=f"s{i}"))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(save, range(24)))
    assert len(s.latency_tables()) == 1 and len(s.fits()) == 1
    assert s.latency_table("k1").build_s in {float(i) for i in range(24)} and s.fit("fit-1").status.startswith("s")


def test_non_finite_numbers_round_trip(store_url):
    """NaN and infinities (an unmeasured loss, a failed step's error) survive the store: PostgreSQL's json
    refuses the bare NaN token, so the store encodes them."""
    s = Store(store_url)
    r = fit_result()
    r.sensitivity = [Sensitivity("layer1", 8, float("nan"), float("inf")), Sensitivity("layer1", 12, float("-inf"), 0.5)]
    r.settings = {"note": {"$float": 1}, "name": "NaN"}  # look-alikes stay as they are
    s.save_fit(r)
    got = s.fit("fit-1").sensitivity
    assert math.isnan(got[0].loss_increase) and got[0].top1_drop_pp == math.inf and got[1].loss_increase == -math.inf
    assert s.fit("fit-1").settings == {"note": {"$float": 1}, "name": "NaN"}
    t = dataclasses.replace(table(), narrowest_ms=float("nan"))
    s.save_latency_table(t)
    assert math.isnan(s.latency_table("k1").narrowest_ms) and math.isnan(s.latency_tables()[0].narrowest_ms)

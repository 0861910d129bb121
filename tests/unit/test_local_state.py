"""Local tables are kept only after a clean stop; otherwise they are deleted and restored from Kafka."""

from __future__ import annotations

from pathlib import Path

from agents.local_state import CLEAN_STOP, open_tables, stopped_cleanly


def tables(state_dir: Path) -> Path:
    folder = state_dir / "v1" / "tables"
    folder.mkdir(parents=True)
    (folder / "appservices-0.db").write_text("rocksdb")
    return folder


def test_tables_of_a_run_that_stopped_cleanly_are_kept(tmp_path: Path) -> None:
    folder = tables(tmp_path)
    stopped_cleanly(tmp_path)
    assert open_tables(tmp_path, folder)
    assert (folder / "appservices-0.db").exists()


def test_tables_of_a_run_that_did_not_stop_cleanly_are_deleted(tmp_path: Path) -> None:
    folder = tables(tmp_path)
    assert not open_tables(tmp_path, folder)
    assert not folder.exists()


def test_a_started_run_is_unclean_until_it_stops_cleanly(tmp_path: Path) -> None:
    folder = tables(tmp_path)
    stopped_cleanly(tmp_path)
    open_tables(tmp_path, folder)
    assert not (tmp_path / CLEAN_STOP).exists()
    assert not open_tables(tmp_path, folder), "a crash after this start must not find the mark"


def test_a_first_start_has_nothing_to_delete(tmp_path: Path) -> None:
    assert open_tables(tmp_path, tmp_path / "v1" / "tables")

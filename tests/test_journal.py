from harness.journal import Journal, read_journal


def _record(i):
    return {"target": "local", "cell_id": "c%d" % i, "status": "ok", "job": {}}


def test_a_torn_line_is_skipped_with_its_place_and_appends_go_on(tmp_path):
    path = tmp_path / "run.jsonl"
    journal = Journal(path)
    journal.append(_record(1))
    with open(path, "a") as f:
        f.write('{"target": "local", "cell_')  # a crash mid-write
    journal.append(_record(2))
    records, problems = read_journal(path)
    assert [r["cell_id"] for r in records] == ["c1", "c2"]
    assert len(problems) == 1 and problems[0].startswith("%s:2: corrupt journal line" % path)


def test_unknown_schema_and_incomplete_records_are_reported(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"schema": 99, "target": "local"}\n{"schema": 1, "target": "local"}\n')
    records, problems = read_journal(path)
    assert records == []
    assert "schema 99 is not 1" in problems[0]
    assert "lacks cell_id, status, job" in problems[1]


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage")
    records, problems = read_journal(path)
    assert records == [] and "cannot be read" in problems[0]

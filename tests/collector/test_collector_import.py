"""`tagstat-collector import`: an export file goes through the same checks and the same
deduplication as POST /v1/reports; bad lines are rejected with their line number and
reason while the rest is imported; a file that is not an export stores nothing."""

import json
import subprocess
import sys
from pathlib import Path

from collector_fixtures import USER, deletion_request, usage_report

from tagstat.collector.cli import main
from tagstat.collector.importer import import_file
from tagstat.collector.intake import Limits
from tagstat.collector.storage import CollectorStore

COLLECTOR = Path(sys.executable).parent / "tagstat-collector"
OTHER_USER = "5d6f7ed8-167c-417d-a632-64ea5df88b63"


def body(report: dict) -> bytes:
    return json.dumps(report, separators=(",", ":")).encode()


def export_file(path: Path, bodies: list[bytes], *, declared=None, header=None) -> Path:
    head = header or {"format": "tagstat-export", "version": 1,
                      "exported_at": "2026-03-02T00:00:00.000Z",
                      "reports": len(bodies) if declared is None else declared}  # fmt: skip
    path.write_bytes(b"".join(line + b"\n" for line in [json.dumps(head).encode(), *bodies]))
    return path


def run_import(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(COLLECTOR), "--log-level", "warning", "import", *map(str, args)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_importing_a_file_twice_stores_each_report_once(tmp_path):
    reports = [usage_report() for _ in range(3)]
    bodies = [body(r) for r in reports]
    f = export_file(tmp_path / "e.jsonl", bodies)
    db = tmp_path / "c.db"
    first = run_import(f, "--db", db, "--json")
    second = run_import(f, "--db", db, "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout) | {"rejected": []} == {
        "declared": 3, "stored": 3, "duplicate": 0, "deleted": 0, "removed_reports": 0,
        "discarded": 0, "rejected": [],
    }  # fmt: skip
    assert json.loads(second.stdout)["stored"] == 0
    assert json.loads(second.stdout)["duplicate"] == 3
    store = CollectorStore(db)
    assert [r["report_id"] for r in store.list_reports()] == [r["report_id"] for r in reports]
    assert [store.body(r["report_id"]) for r in reports] == bodies  # byte for byte
    store.close()


def test_text_output_counts_each_outcome(tmp_path):
    f = export_file(tmp_path / "e.jsonl", [body(usage_report())])
    proc = run_import(f, "--db", tmp_path / "c.db")
    assert proc.returncode == 0
    assert "1 stored, 0 duplicate, 0 deletion request(s) carried out" in proc.stdout
    assert "0 rejected" in proc.stdout


def test_a_report_uploaded_before_is_a_duplicate_on_import(collector, tmp_path):
    report = usage_report()
    assert collector.post(report).json()["status"] == "stored"
    result = import_file(export_file(tmp_path / "e.jsonl", [body(report)]), collector.app.store)
    assert (result.stored, result.duplicate) == (0, 1)
    imported = usage_report()
    import_file(export_file(tmp_path / "f.jsonl", [body(imported)]), collector.app.store)
    assert collector.post(imported).json()["status"] == "duplicate"


def test_a_deletion_request_in_the_file_is_carried_out(tmp_path):
    store = CollectorStore(tmp_path / "c.db")
    mine, other = usage_report(), usage_report(user_id=OTHER_USER)
    import_file(export_file(tmp_path / "a.jsonl", [body(mine), body(other)]), store)
    late = usage_report()  # an export made before the deletion, imported after it
    result = import_file(
        export_file(tmp_path / "b.jsonl", [body(deletion_request(USER)), body(late)]), store
    )
    assert (result.deleted, result.removed_reports, result.discarded) == (1, 1, 1)
    users = {(r["kind"], r["user_id"]) for r in store.list_reports()}
    assert users == {("usage", OTHER_USER), ("deletion", USER)}
    store.close()


def test_bad_lines_are_rejected_with_line_and_reason_and_the_rest_imported(tmp_path):
    good = usage_report()
    no_user = usage_report()
    del no_user["user_id"]
    serial = usage_report()
    serial["devices"][0]["serial"] = "1740000JEH"  # in clear: refused, as over HTTP
    lines = [b"{not json", body(no_user), body(good), b"", body(serial), body({"x": 1})]
    f = export_file(tmp_path / "e.jsonl", lines, declared=5)
    result = import_file(f, CollectorStore(tmp_path / "c.db"))
    assert result.stored == 1
    assert [n for n, _ in result.rejected] == [2, 3, 6, 7]  # the header is line 1
    reasons = dict(result.rejected)
    assert "not valid JSON" in reasons[2] and "user_id" in reasons[3]
    assert "serial" in reasons[6]
    proc = run_import(f, "--db", tmp_path / "d.db")
    assert proc.returncode == 1  # a rejected report is worth a non-zero exit
    assert "line 3: rejected:" in proc.stdout and "1 stored" in proc.stdout


def test_a_report_over_the_size_limit_is_rejected_without_being_held(tmp_path):
    big = usage_report(padding="x" * 5000)
    small = usage_report()
    f = export_file(tmp_path / "e.jsonl", [body(big), body(small)])
    result = import_file(f, CollectorStore(tmp_path / "c.db"), limits=Limits(decoded_bytes=4000))
    assert result.stored == 1
    assert result.rejected == [(2, "report is larger than the collector's body limit")]


def test_a_file_cut_short_says_so(tmp_path):
    bodies = [body(usage_report()) for _ in range(3)]
    f = export_file(tmp_path / "e.jsonl", bodies)
    f.write_bytes(f.read_bytes()[:-40])  # the last report loses its end
    store = CollectorStore(tmp_path / "c.db")
    result = import_file(f, store)
    assert result.stored == 2 and [n for n, _ in result.rejected] == [4]
    proc = run_import(f, "--db", tmp_path / "d.db")
    assert "line 4: rejected: body is not valid JSON" in proc.stdout
    assert proc.returncode == 1


def test_a_missing_line_is_reported(tmp_path):
    f = export_file(tmp_path / "e.jsonl", [body(usage_report())], declared=2)
    proc = run_import(f, "--db", tmp_path / "c.db")
    assert proc.returncode == 0
    assert "announces 2 report(s), the file holds 1" in proc.stdout


def test_a_crlf_copy_still_stores_the_exact_bytes(tmp_path):
    report = usage_report()
    f = export_file(tmp_path / "e.jsonl", [body(report)])
    f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    store = CollectorStore(tmp_path / "c.db")
    assert import_file(f, store).stored == 1
    assert store.body(report["report_id"]) == body(report)


def test_a_file_that_is_not_an_export_stores_nothing(tmp_path, capsys):
    db = tmp_path / "c.db"
    cases = {
        "plain.jsonl": body(usage_report()) + b"\n",  # bodies without the header
        "other.json": b'{"format": "something-else", "version": 1}\n',
        "newer.jsonl": b'{"format": "tagstat-export", "version": 2}\n' + body(usage_report()),
        "binary": b"\x89PNG\r\n\x1a\n",
        "empty": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["import", str(tmp_path / name), "--db", str(db)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tagstat-collector: error: "), err
        assert "not a tagstat export" in err or "version not supported" in err
    assert main(["import", str(tmp_path / "missing"), "--db", str(db)]) == 1
    assert "no file" in capsys.readouterr().err
    assert CollectorStore(db).list_reports() == []

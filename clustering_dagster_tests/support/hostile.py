"""Hostile input for the result tools, shared by the tests and the reliability benchmark: a
partition whose texts hold spreadsheet formulas, HTML, terminal control sequences and Rich
markup (`fixtures/hostile_texts.jsonl`, beside real Banking77 queries); the CLI run against it
as a user runs it; real mounts (a read-only folder, a nearly full device) to write into."""

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from .chromium import Browser, chromium
from .explored import CLI
from .paths import FIXTURES
from .workspace import Workspace, banking_slice

ESCAPE = "\x1b"
HUGE = str(2**63)
HOSTILE = FIXTURES / "hostile_texts.jsonl"
DATASET = "hostile"
# What a terminal acts on: C0/C1 controls (but newline) and the bidi overrides and isolates.
UNSAFE_CHARS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
                                 *range(0x2066, 0x206A)]} - {"\n"}  # fmt: skip


def hostile_texts() -> pl.DataFrame:
    return pl.read_ndjson(HOSTILE)


def write_dataset(folder: Path) -> None:
    """The hostile dataset (real queries of 6 Banking77 intents, then the hostile texts) as
    `hostile.jsonl` with its YAML in a datasets folder."""
    frame = pl.concat([banking_slice(6).select("text", "category"), hostile_texts()])
    frame.write_ndjson(folder / f"{DATASET}.jsonl")
    (folder / f"{DATASET}.yaml").write_text("label_column: category\n")


def build(root: Path) -> Workspace:
    """A workspace whose `hostile|default` partition is materialised for real."""
    workspace = Workspace(root)
    write_dataset(workspace.datasets)
    assert workspace.materialize(DATASET).success
    return workspace


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def run_cli(workspace: Workspace, *args: str | bytes, stdin: bytes = b"", db=None) -> Done:
    """`clustering-dagster --db DB ARGS` in a fresh process whose datasets and run
    configurations are the workspace's (the inputs an export must not overwrite)."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "CLUSTERING_DATASETS_DIR": str(workspace.datasets),
        "CLUSTERING_RUN_CONFIGS": str(workspace.configs),
    }
    done = subprocess.run(
        [str(CLI), "--db", str(db or workspace.database), *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        env=env,
    )
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


def one_line_error(done: Done, code: int = 1) -> str:
    """The single `error: ...` line a failed command printed (else an AssertionError)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and "Traceback" not in done.stderr, done
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def terminal_safe(output: str) -> bool:
    return not UNSAFE_CHARS & set(output)


@contextlib.contextmanager
def mounted(options: str, source: Path | None = None) -> Iterator[Path]:
    """A real mount for the test's lifetime: a tmpfs (`options` e.g. 'size=64k'), or with
    `source` a bind mount of it ('ro' for read-only). Needs root, as tests and CI run here."""
    target = Path(tempfile.mkdtemp(prefix="mount_"))
    if source is None:
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]
    else:
        command = ["mount", "--bind", "-o", options, str(source), str(target)]
    subprocess.run(command, check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)
        target.rmdir()


def stored_texts(workspace) -> dict[str, str]:
    """text_id -> text as the results store them."""
    with duckdb.connect(str(workspace.database), read_only=True) as conn:
        return dict(
            conn.execute(
                "SELECT text_id, text FROM clustering.texts WHERE dataset = ? AND run_config = 'default'",
                [DATASET],
            ).fetchall()
        )


def cluster_of(workspace, fragment: str) -> str:
    """The finest-level node id of the text holding `fragment`."""
    for cluster in json.loads(run_cli(workspace, "export", DATASET, "--format", "json").stdout):
        if any(fragment in item["content"] for item in cluster["items"]):
            return cluster["id"]
    raise AssertionError(fragment)


def _refused_everywhere(hostile, path: Path) -> None:
    """Every command that writes a file refuses `path` in one line and leaves it as it was."""
    before = digest(path) if path.exists() else None
    for args in (
        ["export", DATASET, "--format", "csv", "--out", str(path)],
        ["export", DATASET, "--format", "json", "-o", str(path)],
        ["export", DATASET, "--format", "parquet", "--out", str(path)],
        ["map", DATASET, "--out", str(path)],
    ):
        line = one_line_error(run_cli(hostile, *args))
        assert "refusing to write" in line and str(path) in line, line
    assert (digest(path) if path.exists() else None) == before
    assert run_cli(hostile, "datasets").returncode == 0  # the results still read


def not_over_the_results_database(hostile, tmp_path):
    _refused_everywhere(hostile, hostile.database)


def not_over_the_results_write_ahead_log(hostile, tmp_path):
    _refused_everywhere(hostile, Path(f"{hostile.database}.wal"))


def not_over_another_duckdb_file(hostile, tmp_path):
    other = tmp_path / "notes.db"
    with duckdb.connect(str(other)) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    _refused_everywhere(hostile, other)
    with duckdb.connect(str(other), read_only=True) as conn:
        assert conn.execute("SELECT answer FROM kept").fetchall() == [(42,)]


def not_over_a_dataset_file(hostile, tmp_path):
    _refused_everywhere(hostile, hostile.datasets / f"{DATASET}.jsonl")
    _refused_everywhere(hostile, hostile.datasets / f"{DATASET}.yaml")


def not_over_the_run_configurations(hostile, tmp_path):
    _refused_everywhere(hostile, hostile.configs)


def csv_export_neutralises_formulas_unless_asked_not_to(hostile, tmp_path):
    texts = stored_texts(hostile)
    risky = {i: t for i, t in texts.items() if t[0] in "=+-@\t\r"}
    assert len(risky) >= 5
    guarded, exact = tmp_path / "guarded.csv", tmp_path / "exact.csv"
    assert (
        run_cli(hostile, "export", DATASET, "--format", "csv", "--out", str(guarded)).returncode
        == 0
    )
    done = run_cli(
        hostile, "export", DATASET, "--format", "csv", "--no-formula-guard", "-o", str(exact)
    )
    assert done.returncode == 0, done.stderr  # fmt: skip
    stdout = run_cli(hostile, "export", DATASET, "--format", "csv").stdout
    for table, guard in ((guarded.read_text(), True), (stdout, True), (exact.read_text(), False)):
        rows = {r["text_id"]: r for r in csv.DictReader(io.StringIO(table))}
        assert set(rows) == set(texts)
        for text_id, text in texts.items():
            shown = rows[text_id]["text"]
            assert shown == ("'" + text if guard and text_id in risky else text)
        for row in rows.values():  # no cell of any column starts a formula
            if guard:
                assert not any(cell and cell[0] in "=+-@\t\r" for cell in row.values())


def human_output_shows_control_characters_escaped_and_json_stays_exact(hostile, tmp_path):
    texts = stored_texts(hostile)
    planted = [t for t in texts.values() if ESCAPE in t or "\x9b" in t or "\u202e" in t]
    assert len(planted) >= 5
    cleared = next(t for t in planted if "[2J" in t)
    cluster = cluster_of(hostile, cleared)
    every = ["--limit", "0"]
    outputs = {
        "texts": run_cli(hostile, "texts", DATASET, cluster, *every),
        "show": run_cli(hostile, "show", DATASET, cluster, "-n", "50"),
        "search": run_cli(hostile, "search", "the screen was cleared: card declined", "-n", "50"),
        "tree": run_cli(hostile, "tree", DATASET),
        "runs": run_cli(hostile, "runs"),
    }
    for name, done in outputs.items():
        assert done.returncode == 0, (name, done.stderr)
        assert terminal_safe(done.stdout) and terminal_safe(done.stderr), name
    assert "\\x1b[2J\\x1b[H the screen was cleared" in outputs["texts"].stdout.replace("\n", "")
    for fine in {cluster_of(hostile, t) for t in planted}:
        shown = run_cli(hostile, "texts", DATASET, fine, *every)
        assert shown.returncode == 0 and terminal_safe(shown.stdout), fine
    # Rich markup in data is printed as text
    markup = next(t for t in texts.values() if t.startswith("[bold red]"))
    shown = run_cli(hostile, "texts", DATASET, cluster_of(hostile, markup), *every).stdout
    assert "[bold red]not markup[/]" in shown.replace("\n", "")
    # JSON keeps every text exactly
    listed = json.loads(run_cli(hostile, "texts", DATASET, cluster, *every, "--json").stdout)
    assert cleared in [row["text"] for row in listed]
    for text in planted:
        raw = run_cli(hostile, "texts", DATASET, cluster_of(hostile, text), *every, "--json")
        assert text in [row["text"] for row in json.loads(raw.stdout)]
        assert terminal_safe(raw.stdout)  # controls are \u escapes inside JSON strings


def a_query_that_is_not_utf8_is_one_line_and_the_others_are_answered(hostile, tmp_path):
    line = one_line_error(run_cli(hostile, "search", b"card \xff", "-d", DATASET))
    assert "not UTF-8" in line and "0xff" in line
    done = run_cli(hostile, "search", "-", "-d", DATASET, "--json", "-n", "2",
                   stdin=b"card arrival\nbad \xff query\ncurrency exchange\n")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    answered = [json.loads(line)["query"] for line in done.stdout.splitlines()]
    assert answered == ["card arrival", "currency exchange"]
    assert "stdin line 2 is not UTF-8" in done.stderr


def integers_out_of_range_are_usage_errors(hostile, tmp_path):
    for args in (
        ["runs", "--limit", HUGE],
        ["tree", DATASET, "--depth", HUGE],
        ["texts", DATASET, "fine/0", "-n", HUGE],
        ["show", DATASET, "fine/0", "--examples", HUGE],
        ["search", "card", "-n", HUGE],
        ["export", DATASET, "--format", "json", "--truncate", HUGE],
        ["map", DATASET, "--port", HUGE],
    ):
        line = one_line_error(run_cli(hostile, *args), code=2)
        assert "is not in the range" in line, line


def unknown_names_are_errors_everywhere(hostile, tmp_path):
    line = one_line_error(run_cli(hostile, "runs", "--dataset", "nosuch"))
    assert "no results for dataset 'nosuch'" in line and DATASET in line
    line = one_line_error(run_cli(hostile, "runs", "--run-config", "nosuch"))
    assert "run configuration 'nosuch'" in line and "default" in line
    one_line_error(run_cli(hostile, "runs", "-d", DATASET, "-r", "nosuch"))
    assert run_cli(hostile, "runs", "-d", DATASET, "-r", "default").returncode == 0


def an_out_folder_that_does_not_exist(hostile, tmp_path):
    missing = tmp_path / "no" / "x.csv"
    line = one_line_error(
        run_cli(hostile, "export", DATASET, "--format", "csv", "-o", str(missing))
    )
    assert "does not exist" in line and not missing.parent.exists()


def an_out_file_on_a_read_only_mount_is_kept(hostile, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "old.csv").write_text("kept\n")
    with mounted("ro", source=folder) as readonly:
        line = one_line_error(
            run_cli(hostile, "export", DATASET, "--format", "csv", "-o", str(readonly / "old.csv"))
        )
        assert "Read-only file system" in line
    assert (folder / "old.csv").read_text() == "kept\n"


def a_full_device_keeps_the_old_file(hostile, tmp_path):
    with mounted("size=256k") as small:
        (small / "map.html").write_text("old map")
        line = one_line_error(run_cli(hostile, "map", DATASET, "--out", str(small / "map.html")))
        assert "no space left" in line
        assert (small / "map.html").read_text() == "old map"
        assert [p.name for p in small.iterdir()] == ["map.html"]  # no temporary file left


def map_beside_a_database_on_a_read_only_mount(hostile, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    shutil.copy(hostile.database, folder / "results.duckdb")
    with mounted("ro", source=folder) as readonly:
        database = readonly / "results.duckdb"
        line = one_line_error(run_cli(hostile, "map", DATASET, db=database))
        assert "Read-only file system" in line and "--out" in line
        done = run_cli(hostile, "map", DATASET, "--out", str(tmp_path / "m.html"), db=database)
        assert done.returncode == 0, done.stderr


def _serve(hostile, out: Path, port: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [CLI, "--db", str(hostile.database), "map", DATASET, "--out", str(out), "--serve",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def map_server_on_a_port_in_use(hostile, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = _serve(hostile, tmp_path / "a.html", port)
        out, err = server.communicate(timeout=300)
        line = one_line_error(Done(server.returncode, out, err))
        assert f"port {port} on 127.0.0.1 is in use" in line


@contextlib.contextmanager
def _serving(hostile, out: Path) -> Iterator[tuple[str, list[str]]]:
    """A running `map --serve`: its URL, and after the block the lines of its stderr."""
    server = _serve(hostile, out)
    said: list[str] = []
    try:
        server.stdout.readline()
        yield re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline()).group(0), said
        time.sleep(1)
    finally:
        server.terminate()
        said += server.communicate(timeout=30)[1].splitlines()


def map_server_clients_that_hang_up_early(hostile, tmp_path):
    out = tmp_path / "served.html"
    with _serving(hostile, out) as (url, said):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for _ in range(3):  # ask for the 4 MB page and hang up at once, with a reset
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            linger = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # on, 0 s: close with a reset
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            client.close()
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET / HT")  # a request cut short
        half.close()
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.read() == out.read_bytes()  # and it still serves
    assert len(said) <= 4  # at most one line per client that hung up, never a traceback
    assert all(line.startswith("map server: a request from 127.0.0.1") for line in said), said


def map_server_after_the_file_is_removed(hostile, tmp_path):
    out = tmp_path / "served.html"
    with _serving(hostile, out) as (url, said):
        out.unlink()
        try:
            urllib.request.urlopen(url, timeout=30)
            raise AssertionError("a removed map was served")
        except urllib.error.HTTPError as gone:
            assert gone.code == 503
    assert said == [], said


def the_map_shows_quotes_as_quotes_and_survives_a_malformed_address(hostile, tmp_path):
    assert chromium(), "the map test needs headless Chromium: apt-get install chromium"
    out = tmp_path / "map.html"
    assert run_cli(hostile, "map", DATASET, "--out", str(out)).returncode == 0
    page_text = out.read_text()
    inlined = re.search(r'id="map-data" type="application/json">(.*?)</script>', page_text, re.S)
    assert "<" not in inlined.group(1)  # no tag from data can close the data's script element
    data = json.loads(inlined.group(1))
    hovers = [h for trace in data["traces"] for h in trace["hover"]]
    assert not any("&quot;" in h or "&#x27;" in h for h in hovers)
    quoted = next(h for h in hovers if "never" in h and "PIN" in h)
    assert 'my "new" card &amp; PIN &lt;b&gt;never&lt;/b&gt; came' in quoted
    with Browser() as page:
        page.open(out.as_uri() + "#q=%E0%A4%A")
        page.wait_until("document.getElementById('map').dataset.ready === 'true'")
        assert page.evaluate("document.getElementById('search').value") == "%E0%A4%A"
        # plotly shows the escaped hover as the text itself: quotes, ampersand and tags as typed
        shown = page.evaluate(
            "(async () => { const d = document.createElement('div'); document.body.append(d);"
            f" await Plotly.newPlot(d, [], {{annotations: [{{text: {json.dumps(quoted)},"
            " x: 0, y: 0, showarrow: false}]});"
            " return d.querySelector('.annotation-text').textContent; })()"
        )
        assert 'my "new" card & PIN <b>never</b> came' in shown
        assert page.errors == []
    assert hostile_texts().height >= 15


# Every case: (the partition's workspace or sandbox, a scratch folder); an AssertionError fails it.
CASES = {
    "not over the results database": not_over_the_results_database,
    "not over the results write ahead log": not_over_the_results_write_ahead_log,
    "not over another duckdb file": not_over_another_duckdb_file,
    "not over a dataset file": not_over_a_dataset_file,
    "not over the run configurations": not_over_the_run_configurations,
    "csv export neutralises formulas unless asked not to": csv_export_neutralises_formulas_unless_asked_not_to,
    "human output shows control characters escaped and json stays exact": human_output_shows_control_characters_escaped_and_json_stays_exact,
    "a query that is not utf8 is one line and the others are answered": a_query_that_is_not_utf8_is_one_line_and_the_others_are_answered,
    "integers out of range are usage errors": integers_out_of_range_are_usage_errors,
    "unknown names are errors everywhere": unknown_names_are_errors_everywhere,
    "an out folder that does not exist": an_out_folder_that_does_not_exist,
    "an out file on a read only mount is kept": an_out_file_on_a_read_only_mount_is_kept,
    "a full device keeps the old file": a_full_device_keeps_the_old_file,
    "map beside a database on a read only mount": map_beside_a_database_on_a_read_only_mount,
    "map server on a port in use": map_server_on_a_port_in_use,
    "map server clients that hang up early": map_server_clients_that_hang_up_early,
    "map server after the file is removed": map_server_after_the_file_is_removed,
    "the map shows quotes as quotes and survives a malformed address": the_map_shows_quotes_as_quotes_and_survives_a_malformed_address,
}

"""Editing a tree in `clustering-dagster explore`, driven by headless Chromium as a person uses it:
rename, tag, flag, move a cluster under another parent, merge, split selected texts into a new
cluster, move a text, undo; each seen on the cluster page, the tree page, the map, search and
the CLI. A bad edit shows its one line and changes nothing; an edit from another site is
refused; the edits that no longer fit the clustering are listed on the changes page with the
clusters holding their texts now.

One results file (120 real Banking77 queries, `bank|default`) is clustered once; the explorer
runs over a copy, and the tests edit it in order, each reading the tree as it is then."""

import http.server
import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from clustering_dagster.core.curation.edits import Edit
from clustering_dagster.core.curation.records import next_edit_id, now, write_edit
from clustering_dagster.core.curation.refresh import refresh
from clustering_dagster.core.results.reading import leaf_assignments, load_tree, read_only
from clustering_dagster.core.storage.store import Partition, connect, transaction
from clustering_dagster.core.storage.store import visible_version as published

from .support.workspace import Workspace, banking_slice
from .test_explorer import (
    Reply,
    Server,
    address,
    cli_json,
    follow,
    local_only,
    node_url,
    settle,
    start_explorer,
    stop,
)

DATASET = "bank"
AUTHOR = "Ada Lovelace"
PART = Partition(DATASET, "default")


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    """A copy of `bank|default` clustered once (6 intents, 20 queries each)."""
    workspace = Workspace(tmp_path_factory.mktemp("curation"))
    workspace.add_dataset(DATASET, banking_slice(6))
    assert workspace.materialize(DATASET).success
    copy = workspace.root / "explored.duckdb"
    shutil.copy(workspace.database, copy)
    return copy


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "explorer.log"
    running = start_explorer(database, log, "--author", AUTHOR)
    yield running
    stop(running)
    assert "Traceback" not in running.log.read_text()


# --- reading the results as they are now ---------------------------------------------------------


def nodes(database: Path) -> dict[str, dict]:
    """`clustering-dagster tree --json`, by node id."""
    return {n["node_id"]: n for n in cli_json(database, "tree", DATASET, "-r", "default")}


def finest(tree: dict[str, dict]) -> list[dict]:
    depth = max(n["level"] for n in tree.values())
    return [n for n in tree.values() if n["level"] == depth]


def edits_made(database: Path) -> int:
    with read_only(database) as conn:
        return conn.execute("SELECT count(*) FROM clustering.edits").fetchone()[0]


def texts_of(database: Path, node_id: str) -> list[dict]:
    return cli_json(database, "texts", DATASET, node_id, "--limit", "0")


class Unfollowed(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None  # a redirect is the answer


def post(server: Server, path: str, body: bytes, headers: dict) -> Reply:
    """The answer to a POST (a redirect not followed)."""
    request = urllib.request.Request(server.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.build_opener(Unfollowed).open(request, timeout=120) as reply:
            return Reply(reply.status, dict(reply.headers), reply.read().decode())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read().decode())


# --- driving the cluster page --------------------------------------------------------------------


def open_cluster(page, server: Server, node_id: str) -> None:
    page.open(server.url + node_url(DATASET, "default", node_id))
    settle(page, "document.getElementById('cluster-name')")


def fill(page, selector: str, value: str) -> None:
    page.evaluate(f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}")


def choose(page, selector: str, *values: str) -> None:
    """Select exactly `values` in the select `selector`."""
    page.evaluate(
        f"Array.from(document.querySelector({json.dumps(selector)}).options)"
        f".forEach(o => {{ o.selected = {json.dumps(list(values))}.includes(o.value); }})"
    )


def submit(page, button: str) -> None:
    """Click a form's submit button and wait for the page the server answers with."""
    follow(page, button, "document.querySelector('h1')")


def edit_rows(page) -> list[list[str]]:
    """The cluster page's edits table: [edit id, what, who, status] per row."""
    return page.evaluate(
        "Array.from(document.querySelectorAll('#edits tbody tr')).map(r => "
        "[r.cells[0].textContent.trim(), r.cells[1].firstChild.textContent.trim(), "
        "r.cells[2].textContent.trim(), r.dataset.status])"
    )


# --- the edits, in order -------------------------------------------------------------------------


def test_a_rename_shows_on_the_cluster_page_the_tree_the_map_search_and_the_cli(
    server, database, page
):
    tree = nodes(database)
    target = finest(tree)[0]
    parent = tree[target["parent_id"]]
    base = node_url(DATASET, "default")
    server.json(base + "/api/map")  # read once: the caches must see the edit
    server.json(base + "/api/search?q=" + urllib.parse.quote(target["name"]))

    open_cluster(page, server, target["node_id"])
    assert page.texts("#no-edits") == ["No one has edited this cluster."]
    assert page.evaluate("document.getElementById('named-by')") is None
    fill(page, "#rename-form input[name=name]", "Refunds that never arrived")
    fill(page, "#rename-form textarea[name=summary]", "People asking where their refund is.")
    submit(page, "#rename-form button")
    assert address(page) == node_url(DATASET, "default", target["node_id"])
    assert page.texts("#cluster-name") == ["Refunds that never arrived"]
    assert page.texts("#summary") == ["People asking where their refund is."]
    assert page.texts("#named-by") == ["named by a person"]
    assert edit_rows(page) == [
        ["1", f"{target['node_id']} named 'Refunds that never arrived'", AUTHOR, "applied"]
    ]

    page.open(server.url + base)
    settle(page, "document.getElementById('tree').dataset.ready === 'true'")
    toggle = f'#tree li[data-node="{parent["node_id"]}"] > .row > button.toggle'
    below = f'#tree li[data-node="{target["node_id"]}"] > .row'
    page.click(toggle)
    settle(page, f"document.querySelector('{below}')")
    assert page.texts(f"{below} a.name") == ["Refunds that never arrived"]
    assert page.evaluate(f"document.querySelector('{below} .mark').title") == "named by a person"

    renamed = nodes(database)[target["node_id"]]
    assert (renamed["name"], renamed["named_by"]) == ("Refunds that never arrived", "person")
    assert renamed["summary"] == "People asking where their refund is."
    labels = {label["node_id"]: label["text"] for label in server.json(base + "/api/map")["labels"]}
    assert labels[target["node_id"]] == "Refunds that never arrived"
    hits = server.json(base + "/api/search?q=refund+never+arrived")["clusters"]
    assert "Refunds that never arrived" in [hit["name"] for hit in hits]
    local_only(page, server)


def test_a_tag_and_a_flag_show_on_the_cluster_page(server, database, page):
    target = finest(nodes(database))[1]
    open_cluster(page, server, target["node_id"])
    fill(page, "#tag-form input[name=tag]", "billing")
    submit(page, "#tag-form button")
    fill(page, "#flag-form input[name=note]", "two intents in one cluster?")
    submit(page, "#flag-form button")
    assert address(page) == node_url(DATASET, "default", target["node_id"])
    assert page.texts("#curated .label") == ["billing"]
    assert page.texts("#flag") == ["Flagged for review: two intents in one cluster?"]
    assert [row[1:] for row in edit_rows(page)] == [
        [f"{target['node_id']} tagged 'billing'", AUTHOR, "applied"],
        [f"{target['node_id']} flagged for review: two intents in one cluster?", AUTHOR, "applied"],
    ]
    by_script = post(
        server,
        node_url(DATASET, "default") + "/api/edit",
        json.dumps(
            {"kind": "tag", "node_id": target["node_id"], "value": {"tag": "cards"}}
        ).encode(),
        {"Origin": server.url, "Content-Type": "application/json"},
    )
    assert by_script.status == 200
    made = by_script.json()
    assert (made["kind"], made["what"], made["author"]) == (
        "tag",
        f"{target['node_id']} tagged 'cards'",
        AUTHOR,
    )
    assert made["url"] == node_url(DATASET, "default", target["node_id"])
    tagged = nodes(database)[target["node_id"]]
    assert (tagged["tags"], tagged["flag"]) == (["billing", "cards"], "two intents in one cluster?")
    local_only(page, server)


def test_a_fine_cluster_moves_under_another_parent(server, database, page):
    tree = nodes(database)
    tops = [n for n in tree.values() if n["level"] == 0]
    assert len(tops) >= 2
    target = next(n for n in finest(tree)[2:] if tree[n["parent_id"]]["n_children"] > 1)
    new_parent = next(n for n in tops if n["node_id"] != target["parent_id"])
    open_cluster(page, server, target["node_id"])
    choose(page, "#move-form select", new_parent["node_id"])
    submit(page, "#move-form button")
    assert address(page) == node_url(DATASET, "default", target["node_id"])
    assert page.texts("nav.path a[data-node]") == [new_parent["name"]]
    assert page.texts("#placed-by") == ["placed by a person"]

    after = nodes(database)
    assert after[target["node_id"]]["parent_id"] == new_parent["node_id"]
    assert after[target["node_id"]]["placed_by"] == "person"
    assert after[new_parent["node_id"]]["size"] == new_parent["size"] + target["size"]
    assert after[target["parent_id"]]["size"] == tree[target["parent_id"]]["size"] - target["size"]
    follow(page, "nav.path a[data-node]", "document.getElementById('children')")
    assert target["node_id"] in page.texts("#children .id")
    local_only(page, server)


def test_a_merge_takes_the_other_clusters_texts_and_an_undo_gives_them_back(server, database, page):
    tree = nodes(database)
    into, other = finest(tree)[-1], finest(tree)[-2]
    open_cluster(page, server, into["node_id"])
    choose(page, "#merge-form select", other["node_id"])
    submit(page, "#merge-form button")
    assert address(page) == node_url(DATASET, "default", into["node_id"])
    assert page.texts("#cluster-size") == [f"{into['size'] + other['size']:,}"]
    merged = nodes(database)
    assert other["node_id"] not in merged
    assert merged[into["node_id"]]["size"] == into["size"] + other["size"]
    assert server.get(node_url(DATASET, "default", other["node_id"])).status == 404

    edit_id, what, _, status = edit_rows(page)[-1]
    assert (what, status) == (f"{other['node_id']} merged into {into['node_id']}", "applied")
    submit(page, f'#edits tr[data-edit="{edit_id}"] button.undo')
    assert address(page) == node_url(DATASET, "default", into["node_id"])
    assert page.texts("#cluster-size") == [f"{into['size']:,}"]
    rows = edit_rows(page)
    assert rows[-2][0] == edit_id and rows[-2][3] == "undone"
    assert rows[-1][1:] == [f"edit {edit_id} undone", AUTHOR, "applied"]
    undone = page.texts(f'#edits tr[data-edit="{edit_id}"] .status')
    assert undone == ["undone"] and page.evaluate(
        f"document.querySelector('#edits tr[data-edit=\"{edit_id}\"] button.undo')"
    ) is None  # fmt: skip
    back = nodes(database)
    assert back[other["node_id"]]["size"] == other["size"]
    assert back[into["node_id"]]["size"] == into["size"]
    local_only(page, server)


def test_selected_texts_split_into_a_new_cluster_and_a_text_moves_to_another(
    server, database, page
):
    tree = nodes(database)
    source, target = finest(tree)[0], finest(tree)[1]
    open_cluster(page, server, source["node_id"])
    chosen = page.evaluate(
        "Array.from(document.querySelectorAll('#texts li')).slice(0, 2)"
        ".map(li => li.querySelector('.text').textContent)"
    )
    page.click("#texts li:nth-child(1) input.pick")
    page.click("#texts li:nth-child(2) input.pick")
    fill(page, "#texts-form input[name=name]", "Refund status")
    submit(page, "#texts-form button[value=split]")
    made = edits_made(database)  # the split is the latest edit
    new = f"{source['level_name']}/{1_000_000 + made}"
    assert address(page) == node_url(DATASET, "default", new)
    assert page.texts("#cluster-name") == ["Refund status"]
    assert page.texts("#cluster-size") == ["2"]
    assert sorted(page.texts("#texts .text")) == sorted(chosen)
    after = nodes(database)
    assert after[new]["parent_id"] == source["parent_id"] and after[new]["placed_by"] == "person"
    assert after[source["node_id"]]["size"] == source["size"] - 2

    open_cluster(page, server, source["node_id"])
    moved = page.texts("#texts li:nth-child(1) .text")[0]
    page.click("#texts li:nth-child(1) input.pick")
    choose(page, "#texts-form select[name=to]", target["node_id"])
    submit(page, "#texts-form button[value=move_texts]")
    assert address(page) == node_url(DATASET, "default", source["node_id"])
    assert page.texts("#cluster-size") == [f"{source['size'] - 3:,}"]
    assert moved not in page.texts("#texts .text")
    assert moved in [t["text"] for t in texts_of(database, target["node_id"])]
    assert nodes(database)[target["node_id"]]["size"] == target["size"] + 1
    local_only(page, server)


def test_a_bad_edit_shows_its_one_line_and_changes_nothing(server, database, page):
    tree = nodes(database)
    target = finest(tree)[0]
    top = next(n for n in tree.values() if n["level"] == 0)
    before, sizes = edits_made(database), {n: tree[n]["size"] for n in tree}
    open_cluster(page, server, target["node_id"])
    for other, line in (
        (target["node_id"], f"{target['node_id']} cannot be merged into itself"),
        (
            top["node_id"],
            f"merge joins clusters of one level: {top['node_id']} is {top['level_name']}, "
            f"{target['node_id']} is {target['level_name']}",
        ),
    ):
        page.evaluate(
            "document.querySelector('#merge-form select')"
            f".add(new Option('not offered', {json.dumps(other)}))"
        )
        choose(page, "#merge-form select", other)
        submit(page, "#merge-form button")
        assert page.texts("#edit-error") == [f"error: {line}"]
        assert page.texts("#cluster-name") == [target["name"]]  # the page again, unchanged
    origin = {"Origin": server.url}
    refused = post(
        server,
        node_url(DATASET, "default", target["node_id"]) + "/edit",
        b"kind=move&parent=" + target["node_id"].encode(),
        origin | {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status == 400 and 'id="edit-error"' in refused.body
    answer = post(
        server,
        node_url(DATASET, "default") + "/api/edit",
        json.dumps(
            {"kind": "rename", "node_id": target["node_id"], "value": {"name": " "}}
        ).encode(),
        origin | {"Content-Type": "application/json"},
    )
    assert (answer.status, answer.json()["error"]) == (400, "the name is empty")
    assert edits_made(database) == before
    assert {n: m["size"] for n, m in nodes(database).items()} == sizes
    assert (
        page.errors
        == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"] * 2
    )  # the two pages answered 400, as they should
    page.errors.clear()
    local_only(page, server)


class Foreign(http.server.BaseHTTPRequestHandler):
    """Another site on this machine, whose page POSTs a rename to the explorer."""

    form = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.form)

    def log_message(self, *args):
        pass


def test_an_edit_from_another_site_is_refused(server, database, page):
    target = finest(nodes(database))[0]
    before = edits_made(database)
    action = server.url + node_url(DATASET, "default", target["node_id"]) + "/edit"
    Foreign.form = (
        f'<form method="post" action="{action}"><input type="hidden" name="kind" value="rename">'
        '<input type="hidden" name="name" value="Hacked"><button id="go">go</button></form>'
    ).encode()
    foreign = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    try:
        page.open(f"http://127.0.0.1:{foreign.server_address[1]}/")
        follow(page, "#go", "document.querySelector('h1')")
    finally:
        foreign.shutdown()
    assert page.texts("#error") == [
        "error: an edit is taken only from the explorer's own pages (Origin or Referer)"
    ]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    path = node_url(DATASET, "default", target["node_id"]) + "/edit"
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {},  # neither Origin nor Referer
        {"Referer": "http://evil.example/page"},
        {"Origin": server.url.replace("127.0.0.1", "localhost") + "1"},  # another port
    ):
        assert post(server, path, b"kind=rename&name=Hacked", form | headers).status == 403
    assert edits_made(database) == before
    assert nodes(database)[target["node_id"]]["name"] != "Hacked"
    by_localhost = {"Referer": server.url.replace("127.0.0.1", "localhost") + "/p"}
    assert post(server, path, b"kind=tag&tag=kept", form | by_localhost).status == 303
    assert edits_made(database) == before + 1


def stale_edit(database: Path, held_by: str) -> int:
    """An edit of a cluster the clustering no longer has, whose texts `held_by` holds now (as
    after a re-clustering): written and checked as `make_edit` does; its id."""
    with connect(database, lock_timeout_s=60) as conn, transaction(conn):
        tree = load_tree(conn, PART, "keywords")
        members = conn.execute(
            f"SELECT text_hash FROM {leaf_assignments(conn, tree)} "
            "WHERE list_contains(?, cluster_id)",
            [tree.leaves(held_by)],
        ).pl()["text_hash"]
        edit = Edit(
            edit_id=next_edit_id(conn),
            kind="rename",
            level_name=tree.leaf_level,
            cluster_id=999,
            value={"name": "Lost cards"},
            author=AUTHOR,
            made_at=now(),
            made_on=published(conn, "hierarchy", PART),
        )
        write_edit(conn, PART, edit, None, members)
        refresh(conn, PART)
    return edit.edit_id


def test_edits_needing_attention_are_listed_with_the_clusters_holding_their_texts(
    server, database, page
):
    untouched = [
        n for n in finest(nodes(database)) if not n["edit_ids"] and n["method"] != "person"
    ]
    holder = untouched[0]  # its texts are those its machine cluster holds
    edit_id = stale_edit(database, holder["node_id"])
    gone = f"{holder['level_name']}/999"
    page.open(server.url + node_url(DATASET, "default") + "/changes")
    settle(page, "document.getElementById('attention')")
    row = f'#attention tr[data-edit="{edit_id}"]'
    assert page.texts(f"{row} td.reason") == [f"{gone} is no longer in the tree"]
    assert page.texts(f"{row} a.holder") == [holder["name"]]
    assert page.texts(f"{row} .holders .share") == ["100.0%"]
    attention = server.json(node_url(DATASET, "default") + "/api/changes")["attention"]
    assert [(a["edit_id"], a["holders"][0]["node_id"]) for a in attention] == [
        (edit_id, holder["node_id"])
    ]
    follow(page, f"{row} a.holder", "document.getElementById('cluster-name')")
    assert address(page) == node_url(DATASET, "default", holder["node_id"])

    page.open(server.url + node_url(DATASET, "default") + "/changes")
    settle(page, "document.getElementById('attention')")
    follow(page, f"{row} button.undo", "document.getElementById('changes-meta')")
    assert address(page) == node_url(DATASET, "default") + "/changes"
    assert page.evaluate("document.getElementById('attention')") is None
    local_only(page, server)


def test_a_cluster_page_with_its_edit_history_is_quick(server, database):
    """This partition is small; the benchmark of the explorer measures 100,000 texts."""
    edited = finest(nodes(database))[1]
    path = node_url(DATASET, "default", edited["node_id"])
    server.get(path)
    started = time.perf_counter()
    reply = server.get(path)
    seconds = time.perf_counter() - started
    assert reply.status == 200 and 'id="edits"' in reply.body
    print(f"cluster page with edits: {seconds:.3f} s")
    assert seconds < 5  # generous: the machine is shared

import polars as pl
import pytest

from clustering_dagster.core.data_in.datasets import find_dataset, scan_datasets, slugify
from clustering_dagster.core.data_in.ingest import load_texts
from clustering_dagster.core.errors import InputError


def test_slugify_makes_partition_safe_keys():
    assert slugify("Support Tickets, 2024 [EU]|v2") == "support_tickets_2024_eu_v2"
    assert slugify("Café-Requêtes") == "cafe_requetes"
    with pytest.raises(InputError, match="cannot make a dataset key"):
        slugify("???")


def test_discovery_reads_files_folders_and_specs(tmp_path):
    (tmp_path / "Tickets 2024.csv").write_text("body,team\nhello,a\n")
    (tmp_path / "Tickets 2024.yaml").write_text("text_column: body\nmetadata_columns: [team]\n")
    (tmp_path / "chats").mkdir()
    (tmp_path / "chats" / "a.jsonl").write_text('{"text": "hi"}\n')
    (tmp_path / "notes.txt").write_text("not a dataset")
    found, problems = scan_datasets(tmp_path)
    assert sorted(found) == ["chats", "tickets_2024"] and problems == {}
    assert found["tickets_2024"].text_column == "body"
    assert found["tickets_2024"].metadata_columns == ("team",)
    assert [p.name for p in found["chats"].files] == ["a.jsonl"]


def test_a_key_collision_is_an_error_naming_both_files(tmp_path):
    (tmp_path / "my data.csv").write_text("text\na\n")
    (tmp_path / "my-data.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "other.csv").write_text("text\nb\n")
    found, problems = scan_datasets(tmp_path)
    assert list(found) == ["other"]
    assert "my data.csv and my-data.jsonl" in problems["my_data"]
    with pytest.raises(InputError, match=r"my data.csv and my-data.jsonl .* 'my_data'"):
        find_dataset(tmp_path, "my_data")


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    (tmp_path / "a.csv").write_text("text\nx\n")
    with pytest.raises(InputError, match=r"no dataset 'b' .*known: a"):
        find_dataset(tmp_path, "b")


def _load(tmp_path, name, content: bytes, spec: str | None = None):
    (tmp_path / name).write_bytes(content)
    if spec:
        (tmp_path / (name.rsplit(".", 1)[0] + ".yaml")).write_text(spec)
    return load_texts(find_dataset(tmp_path, slugify(name.rsplit(".", 1)[0])))


def test_texts_are_normalised_hashed_and_duplicates_marked_not_dropped(tmp_path):
    texts, report = _load(
        tmp_path, "d.csv", b'text\n"  Hello\n  world "\nHello world\n\n"   "\nother\n'
    )
    assert texts["text"].to_list() == ["Hello world", "Hello world", "other"]
    assert texts["duplicate_of"].to_list() == [None, 0, None]
    assert texts["text_hash"][0] == texts["text_hash"][1] != texts["text_hash"][2]
    assert report.duplicates == 1 and report.empty_dropped == 2  # a blank line and "   "


def test_ids_metadata_and_labels_are_kept(tmp_path):
    texts, _ = _load(
        tmp_path,
        "t.csv",
        b"id,body,team,intent\n7,first,a,x\n9,second,b,y\n",
        "text_column: body\nid_column: id\nmetadata_columns: [team]\nlabel_column: intent\n",
    )
    assert texts["text_id"].to_list() == ["7", "9"]
    assert texts["ground_truth"].to_list() == ["x", "y"]
    assert texts["metadata"].to_list() == ['{"team":"a"}', '{"team":"b"}']


def test_missing_text_column_names_file_and_column(tmp_path):
    with pytest.raises(InputError, match=r"t\.csv: no column 'text' \(text_column\).*\['body'\]"):
        _load(tmp_path, "t.csv", b"body\nhello\n")


def test_empty_file_and_header_only_file_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match=r"e\.csv: the file is empty"):
        _load(tmp_path, "e.csv", b"")
    with pytest.raises(InputError, match=r"h\.csv: the file has a header but no rows"):
        _load(tmp_path, "h.csv", b"text\n")


def test_only_null_or_blank_texts_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"column 'text' holds no non-empty text in 3 rows"):
        _load(tmp_path, "n.jsonl", b'{"text": null}\n{"text": "  "}\n{"text": ""}\n')


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    texts, report = _load(tmp_path, "b.csv", b"text\ncaf\xe9 ok\nfine\n")
    assert texts["text"].to_list() == ["caf\ufffd ok", "fine"]
    assert report.undecodable_bytes == 1


def test_parquet_jsonl_and_folders_are_read(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    pl.DataFrame({"text": ["a one", "a two"]}).write_parquet(folder / "p.parquet")
    (folder / "j.jsonl").write_text('{"text": "b one"}\n')
    texts, report = load_texts(find_dataset(tmp_path, "mixed"))
    assert sorted(texts["text"].to_list()) == ["a one", "a two", "b one"]
    assert report.files == 2
    assert set(texts["source_file"]) == {"p.parquet", "j.jsonl"}


def test_repeated_ids_are_an_error_naming_them_and_their_rows(tmp_path):
    with pytest.raises(
        InputError, match=r"repeats 1 ids \(2 rows\), e\.g\. '1' at r\.csv row 1, r\.csv row 2"
    ):
        _load(tmp_path, "r.csv", b"id,text\n1,a\n1,b\n2,c\n", "id_column: id\n")


@pytest.mark.parametrize(
    ("line", "kind"),
    [("12345", "int"), ("true", "bool"), ('{"a": 1}', "dict"), ('["x"]', "list")],
)
def test_json_texts_that_are_not_strings_are_errors_naming_file_line_and_column(
    tmp_path, line, kind
):
    content = f'{{"text": "fine"}}\n{{"text": {line}}}\n'.encode()
    with pytest.raises(InputError, match=rf"j\.jsonl, line 2: column 'text' holds {kind} "):
        _load(tmp_path, "j.jsonl", content)


def test_parquet_list_column_and_truncated_parquet_are_errors_naming_the_file(tmp_path):
    pl.DataFrame({"text": [["a", "b"], ["c"]]}).write_parquet(tmp_path / "l.parquet")
    with pytest.raises(InputError, match=r"l\.parquet: column 'text' holds List\(String\) values"):
        load_texts(find_dataset(tmp_path, "l"))
    pl.DataFrame({"text": ["a"] * 100}).write_parquet(tmp_path / "cut.parquet")
    whole = (tmp_path / "cut.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"cut\.parquet: cannot be read as parquet"):
        load_texts(find_dataset(tmp_path, "cut"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("metadata_columns: category\n", r"metadata_columns must be a list of column names"),
        ("text_colum: body\n", r"unknown setting 'text_colum'"),
        ("text_column: [body]\n", r"text_column must be one column name"),
        ("- a list\n", r"expected a mapping of settings"),
    ],
)
def test_a_bad_dataset_yaml_is_reported_and_hides_no_other_dataset(tmp_path, spec, message):
    (tmp_path / "bad.csv").write_text("text,category\nx,y\n")
    (tmp_path / "bad.yaml").write_text(spec)
    (tmp_path / "数据.csv").write_text("text\nx\n")
    (tmp_path / "good.csv").write_text("text\nx\n")
    found, problems = scan_datasets(tmp_path)
    assert list(found) == ["good"]
    assert set(problems) == {"bad", "数据.csv"}
    assert "bad.yaml" in problems["bad"] and "cannot make a dataset key" in problems["数据.csv"]
    with pytest.raises(InputError, match=message):
        find_dataset(tmp_path, "bad")

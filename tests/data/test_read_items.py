"""Item metadata readers: MovieLens item files, CSV/TSV/Parquet/JSON lines, and every kind of bad row."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recengine.data.readers import MOVIELENS_GENRES, find_item_metadata, read_interactions, read_items
from recengine.data.validation import BAD_NUMBER, DUPLICATE_ITEM, FIELD_COUNT, MISSING_ITEM
from recengine.errors import DataError, ValidationFailed


def write(dir_: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = dir_ / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def test_u_item_titles_genres_and_year(tmp_path: Path) -> None:
    flags = ["0"] * 19
    flags[1] = flags[5] = "1"  # Action, Comedy
    line1 = "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://x", *flags])
    line2 = "|".join(["2", "Caf\xe9 (1996)", "", "", "", *(["0"] * 18 + ["1"])])
    path = write(tmp_path, "u.item", f"{line1}\n{line2}\n3|too few\n", encoding="latin-1")
    meta, report = read_items(path)
    assert meta.get_column("item").to_list() == ["1", "2"]
    assert meta.get_column("title").to_list() == ["Toy Story (1995)", "Caf\xe9 (1996)"]
    assert meta.get_column("categories").to_list() == [
        [MOVIELENS_GENRES[1], MOVIELENS_GENRES[5]],
        ["Western"],
    ]
    assert meta.get_column("year").to_list() == [1995.0, None]
    assert [(r.line, r.reason) for r in report.rejections] == [(3, FIELD_COUNT)]


def test_u_item_uses_u_genre_names(tmp_path: Path) -> None:
    write(tmp_path, "u.genre", "".join(f"g{k}|{k}\n" for k in range(3)) + "\n")
    path = write(tmp_path, "u.item", "1|A|||url|0|1|1\n")
    meta, _ = read_items(path)
    assert meta.get_column("categories").to_list() == [["g1", "g2"]]


def test_movies_dat_and_movies_csv(tmp_path: Path) -> None:
    dat = write(tmp_path, "movies.dat", "1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n")
    meta, _ = read_items(dat)
    assert meta.rows() == [
        ("1", "Toy Story (1995)", ["Animation", "Comedy"]),
        ("2", "Heat (1995)", ["Action"]),
    ]
    mcsv = write(tmp_path, "movies.csv", 'movieId,title,genres\n1,"Toy Story, The",Animation|Comedy\n')
    meta, _ = read_items(mcsv, fmt="movielens")
    assert meta.rows() == [("1", "Toy Story, The", ["Animation", "Comedy"])]


def test_find_item_metadata(tmp_path: Path) -> None:
    write(tmp_path, "u.data", "1\t1\t1\t1\n")
    assert find_item_metadata(tmp_path) is None
    item = write(tmp_path, "u.item", "1|A|||url" + "|0" * 19 + "\n")
    assert find_item_metadata(tmp_path) == item
    assert find_item_metadata(tmp_path / "u.data") == item
    assert find_item_metadata(write(tmp_path, "other.csv", "user,item\n1,1\n")) is None
    assert read_items(tmp_path)[0].get_column("item").to_list() == ["1"]


def test_items_csv_categories_numeric_and_rejections(tmp_path: Path) -> None:
    text = (
        "item_id,title,categories,price,colour,stock\n"  # 1
        'a,Apple,"fruit|red",1.5,red,3\n'  # 2
        "b,Banana,fruit,0.5,yellow,NA\n"  # 3
        ",Nothing,x,1,green,1\n"  # 4 missing id
        "a,Apple again,fruit,2,red,1\n"  # 5 duplicate id
        "c,Cherry,,cheap,red,2\n"  # 6 non-number in a numeric column
        + "".join(f"d{k},D,fruit,{k},blue,1\n" for k in range(10))
    )
    meta, report = read_items(write(tmp_path, "items.csv", text))
    assert meta.columns == ["item", "title", "categories", "price", "stock"]  # colour is text: not a feature
    assert meta.row(0) == ("a", "Apple", ["fruit", "red"], 1.5, 3.0)
    assert meta.row(1) == ("b", "Banana", ["fruit"], 0.5, None)
    assert meta.height == 12
    assert [(r.line, r.column, r.reason) for r in report.rejections] == [
        (4, "item", MISSING_ITEM),
        (5, "item", DUPLICATE_ITEM),
        (6, "price", BAD_NUMBER),
    ]
    with pytest.raises(ValidationFailed, match=r"items\.csv:4: column 'item'"):
        read_items(tmp_path / "items.csv", on_invalid="fail")


def test_items_comma_delimited_categories_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "items.tsv", "id\tname\ttags\n1\tOne\ta, b\n2\tTwo\t\n")
    meta, _ = read_items(path)
    assert meta.rows() == [("1", "One", ["a", "b"]), ("2", "Two", [])]


def test_item_files_know_every_item_alias_plus_a_bare_id(tmp_path: Path) -> None:
    # One alias table: an item file finds the item column by the same names as an interaction file ...
    books = write(tmp_path, "books.csv", "book_id,title\nb1,Emma\n")
    assert read_items(books)[0].rows() == [("b1", "Emma")]
    # ... and by a bare "id", which in an interaction file is the row's own id, never the item.
    rows = write(tmp_path, "rows.csv", "id,user_id,item_id\nr1,u1,i1\n")
    assert read_interactions(rows)[0].select("user", "item").rows() == [("u1", "i1")]
    with pytest.raises(DataError, match="missing required item column"):
        read_interactions(write(tmp_path, "noitem.csv", "user_id,id\nu1,i1\n"))


def test_items_jsonl_and_parquet(tmp_path: Path) -> None:
    jsonl = write(
        tmp_path,
        "items.jsonl",
        '{"item_id": 1, "title": "A", "categories": ["x", " y "], "price": 2, "new": true}\n'
        '{"item_id": 2, "title": "B", "categories": [], "price": null, "new": false}\n',
    )
    meta, _ = read_items(jsonl)
    assert meta.rows() == [("1", "A", ["x", "y"], 2.0, 1.0), ("2", "B", [], None, 0.0)]
    pq_path = tmp_path / "items.parquet"
    pl.DataFrame({"asin": ["p1"], "title": ["T"], "category": ["a;b"]}).write_parquet(pq_path)
    assert read_items(pq_path)[0].rows() == [("p1", "T", ["a", "b"])]


def test_items_unreadable(tmp_path: Path) -> None:
    bad_json = write(tmp_path, "bad.jsonl", '{"item_id": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not a JSON object"):
        read_items(bad_json)
    no_id = write(tmp_path, "noid.csv", "name,price\nA,1\n")
    with pytest.raises(DataError, match=r"noid\.csv: line 1: missing required item id column"):
        read_items(no_id)
    with pytest.raises(DataError, match="unknown item metadata format"):
        read_items(no_id, fmt="xml")
    with pytest.raises(DataError, match="no such file"):
        read_items(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="directory without item metadata"):
        read_items(tmp_path)
    only_bad = write(tmp_path, "onlybad.csv", "item,title\n,A\n")
    with pytest.raises(DataError, match=r"no valid item rows.*onlybad\.csv:2"):
        read_items(only_bad)


def test_jsonl_lines_must_be_objects(tmp_path: Path) -> None:
    path = write(tmp_path, "arr.jsonl", '{"item": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"arr\.jsonl: line 2: not a JSON object"):
        read_items(path)
    nested = write(tmp_path, "nested.jsonl", '{"item": "a", "scores": [1, 2], "x": 1}\n')
    assert read_items(nested)[0].columns == ["item", "x"]  # a list of numbers is not one numeric feature

"""``recengine data prepare`` / ``data synth`` end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recengine.cli import app
from recengine.data.dataset import TEST, TRAIN, VALID, Dataset

runner = CliRunner()


def prepare(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["data", "prepare", *args])
    return result.exit_code, result.output


def write(dir_: Path, name: str, content: str | bytes) -> Path:
    path = dir_ / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


SEQUENCES = "u1 a b c d\nu2 b c d\nu3 a c\n"


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        (
            "x.csv",
            "user,item,timestamp\n" + "".join(f"u{u},i{i},{u * 10 + i}\n" for u in range(3) for i in range(4)),
            "csv",
        ),
        (
            "x.tsv",
            "user\titem\ttimestamp\n" + "".join(f"u{u}\ti{i}\t{i}\n" for u in range(3) for i in range(4)),
            "tsv",
        ),
        ("u.data", "".join(f"{u}\t{i}\t3\t{i}\n" for u in range(3) for i in range(4)), "movielens"),
        ("seq.txt", SEQUENCES, "sequences"),
        ("pairs.txt", "".join(f"u{u} i{i}\n" for u in range(3) for i in range(4)), "pairs"),
    ],
)
def test_prepare_reads_each_format(tmp_path: Path, name: str, content: str, fmt: str) -> None:
    src = write(tmp_path, name, content)
    for given in (fmt, "auto"):
        out = tmp_path / f"out-{given}"
        code, output = prepare(str(src), "--format", given, "-o", str(out))
        assert code == 0, output
        ds = Dataset.load(out)
        assert ds.n_users == 3
        assert ds.manifest["validation"]["n_rejected"] == 0
        assert set(ds.split.tolist()) == {TRAIN, VALID, TEST}


def test_prepare_with_items_and_drop_report(tmp_path: Path) -> None:
    src = write(tmp_path, "x.csv", "user,item,timestamp\nu,a,1\nu,b,2\nu,c,bad\nu,c,3\nv,a,4\n")
    items = write(tmp_path, "items.csv", "item,title,categories\na,Apple,fruit|red\nb,Bean,veg\nc,Corn,veg\n")
    out = tmp_path / "out"
    code, output = prepare(str(src), "--items", str(items), "--on-invalid", "drop", "-o", str(out))
    assert code == 0, output
    assert f"{src}:4: column 'timestamp'" in output  # the report is printed
    ds = Dataset.load(out)
    assert ds.n_interactions == 4
    assert ds.manifest["validation"]["rows"][0]["line"] == 4
    titles = dict(zip(ds.items.ids.ids[1:], ds.items.titles[1:], strict=True))  # type: ignore[index]
    assert titles == {"a": "Apple", "b": "Bean", "c": "Corn"}


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"),
    [
        ("missing.csv", "user,thing\nu,i\n", [], "line 1: missing required item column"),
        (
            "ts.csv",
            "user,item,timestamp\nu,a,1\nu,b,soon\n",
            ["--on-invalid", "fail"],
            ":3: column 'timestamp'",
        ),
        ("empty.csv", "", [], "the file is empty"),
        ("garbage.csv", bytes(range(256)) * 4, [], "line 1: binary data"),
        ("x.csv", "user,item\nu,i\n", ["--format", "xml"], "unknown format 'xml'"),
        (
            "seq.txt",
            "u1 a\nu2\n",
            ["--format", "sequences", "--on-invalid", "fail"],
            ":2: column '*': wrong field count",
        ),
    ],
)
def test_prepare_bad_input_is_one_line_without_traceback(
    tmp_path: Path, name: str, content: str | bytes, extra: list[str], expected: str
) -> None:
    src = write(tmp_path, name, content)
    code, output = prepare(str(src), *extra, "-o", str(tmp_path / "out"))
    assert code != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert str(src) in lines[0] and expected in lines[0], output
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_prepare_missing_source(tmp_path: Path) -> None:
    code, output = prepare(str(tmp_path / "nope.csv"), "-o", str(tmp_path / "out"))
    assert code != 0 and "no such file" in output and "Traceback" not in output


def test_synth_is_deterministic(tmp_path: Path) -> None:
    hashes = []
    for name in ("a", "b"):
        result = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / name), "--users", "50", "--items", "30"])
        assert result.exit_code == 0, result.output
        hashes.append(json.loads((tmp_path / name / "manifest.json").read_text())["content_hash"])
    assert hashes[0] == hashes[1]


@pytest.mark.bench_data
def test_movielens_100k(bench_data: Path, tmp_path: Path) -> None:
    ml = bench_data / "ml-100k"
    out = tmp_path / "ml"
    code, output = prepare(str(ml / "u.data"), "--items", str(ml / "u.item"), "-o", str(out))
    assert code == 0, output
    ds = Dataset.load(out)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    assert ds.manifest["validation"]["n_rejected"] == 0
    titles = dict(zip(ds.items.ids.ids[1:], ds.items.titles[1:], strict=True))  # type: ignore[index]
    genres = dict(zip(ds.items.ids.ids[1:], ds.items.categories[1:], strict=True))  # type: ignore[index]
    assert titles["1"] == "Toy Story (1995)"
    assert genres["1"] == ["Animation", "Children's", "Comedy"]
    assert all(titles.values()) and sum(bool(g) for g in genres.values()) == 1682
    assert int((ds.split == TEST).sum()) == 943  # every ML-100K user has ≥ 20 ratings


def test_bad_cells_that_look_like_markup_are_printed_verbatim(tmp_path: Path) -> None:
    src = write(tmp_path, "x.csv", "user,item,timestamp\nu,a,1\nu,b,[/bold]\nu,c,2\n")
    code, output = prepare(str(src), "--on-invalid", "fail", "-o", str(tmp_path / "out"))
    assert code != 0 and "Traceback" not in output and "[/bold]" in output
    code, output = prepare(str(src), "--on-invalid", "drop", "-o", str(tmp_path / "out"))
    assert code == 0 and "[/bold]" in output, output

"""Tests of the ML-1M → catalog metadata join (bst.metadata) and its CLI (pipelines.enrich)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rapidfuzz import fuzz

from bst.data.movielens import read_movies
from bst.errors import DataError
from bst.metadata import (
    MATCH_THRESHOLD,
    CatalogSpec,
    film_groups,
    fuzzy_key,
    join_catalogs,
    load_catalog,
    normalize_title,
    partial_names,
    title_keys,
)
from bst.metadata.catalogs import parse_years
from pipelines import enrich

HEADER = ["id", "title", "original_title", "release_date", "overview", "vote_count"]


def write_movies(path: Path, titles: dict[int, str]) -> Path:
    """A movies.dat in ML-1M's format and encoding (ISO-8859-1)."""
    lines = [f"{i}::{t}::Drama" for i, t in titles.items()]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def write_catalog(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def row(id_: str, title: str, date: str, overview: str = "", original: str = "") -> list[str]:
    return [id_, title, original or title, date, overview or f"plot of {title}", "10"]


def join(tmp_path: Path, titles: dict[int, str], rows: list[list[str]], **kwargs):
    movies = read_movies(write_movies(tmp_path / "movies.dat", titles))
    catalog = load_catalog(CatalogSpec(write_catalog(tmp_path / "cat.csv", rows)))
    enriched, report = join_catalogs(movies, [catalog], **kwargs)
    return enriched.set_index("movie_id"), report


# --------------------------------------------------------------------------------------
# Normalization


@pytest.mark.parametrize(
    ("raw", "keys", "year"),
    [
        ("American President, The (1995)", ["the american president"], 1995),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            ["the city of lost children", "la cite des enfants perdus"],
            1995,
        ),
        ("Associate, The (L'Associe)(1982)", ["the associate", "lassocie"], 1982),
        ("Seven (Se7en) (1995)", ["7", "se7en"], 1995),
        ("Misérables, Les (1995)", ["les miserables"], 1995),
        ("Hate (Haine, La) (1995)", ["hate", "la haine"], 1995),
        ("Boot, Das (1981)", ["das boot"], 1981),
        ("Conformist, The (Il Conformista) (1970)", ["the conformist", "il conformista"], 1970),
        ("Avventura, L' (1960)", ["lavventura"], 1960),
        (
            "Dinner Game, The (Le Dîner de cons) (1998)",
            ["the dinner game", "le diner de cons"],
            1998,
        ),
        ("Oscar and Lucinda (a.k.a. Oscar & Lucinda) (1997)", ["oscar and lucinda"], 1997),
        ("Hard 8 (a.k.a. Sydney, a.k.a. Hard Eight) (1996)", ["hard 8", "sydney"], 1996),
        (
            "Professional, The (a.k.a. Leon: The Professional) (1994)",
            ["the professional", "leon the professional"],
            1994,
        ),
        (
            "Communion (a.k.a. Alice, Sweet Alice/Holy Terror) (1977)",
            ["communion", "alice sweet alice holy terror", "alice sweet alice", "holy terror"],
            1977,
        ),
        (
            "Jungle2Jungle (a.k.a. Jungle 2 Jungle) (1997)",
            ["jungle2jungle", "jungle 2 jungle"],
            1997,
        ),
        ("Father of the Bride Part II (1995)", ["father of the bride part 2"], 1995),
        ("Godfather: Part II, The (1974)", ["the godfather part 2"], 1974),
        ("Rocky V (1990)", ["rocky 5"], 1990),
        (
            "Naked Gun 2 1/2: The Smell of Fear, The (1991)",
            ["the naked gun 2 1 2 the smell of fear"],
            1991,
        ),
        ("Schindler's List (1993)", ["schindlers list"], 1993),
        ("Untitled", ["untitled"], None),
    ],
)
def test_title_keys_of_tricky_ml1m_titles(raw, keys, year):
    assert title_keys(raw) == (keys, year)


@pytest.mark.parametrize(
    ("catalog_title", "key"),
    [
        ("The American President", "the american president"),
        ("Léon: The Professional", "leon the professional"),
        ("Ri¢hie Ri¢h", "richie rich"),  # ¢ has no decomposition: mapped by hand
        ("The Naked Gun 33⅓: The Final Insult", "the naked gun 33 1 3 the final insult"),
        ("Around the World in Eighty Days", "around the world in 80 days"),
        ("Schindler’s List", "schindlers list"),  # typographic apostrophe
        ("Oscar & Lucinda", "oscar and lucinda"),
        ("  ", ""),
    ],
)
def test_normalize_title_of_catalog_spellings(catalog_title, key):
    assert normalize_title(catalog_title) == key


def test_partial_names_split_subtitles_and_credits_but_not_ordinary_possessives():
    assert partial_names("Star Wars: Episode IV - A New Hope") == [
        "Star Wars",
        "Episode IV - A New Hope",
    ]
    assert partial_names("Wes Craven's New Nightmare") == ["New Nightmare"]
    assert partial_names("National Lampoon's Loaded Weapon 1") == ["Loaded Weapon 1"]
    assert partial_names("A Bug's Life") == []  # an article is no credit
    assert partial_names("Schindler's List") == []  # 'List' is too short to be evidence
    assert partial_names("Toy Story") == []


def test_fuzzy_key_drops_english_articles_and_part_before_a_number_only():
    assert fuzzy_key("the karate kid part 3") == "karate kid 3"
    assert fuzzy_key("les boys") == "les boys"
    assert fuzzy_key("the") == "the"
    assert fuzzy_key("part of the plan") == "part of the plan"


def test_parse_years_counts_missing_and_unparseable_dates():
    years, missing, bad = parse_years(
        pd.Series(["1995-10-30", "1995", "10/30/1995", "", "soon", "0000-00-00", None])
    )
    assert years.tolist() == [1995, 1995, 1995, pd.NA, pd.NA, pd.NA, pd.NA]
    assert (missing, bad) == (2, 2)


# --------------------------------------------------------------------------------------
# Matching


def test_exact_fuzzy_and_none(tmp_path):
    enriched, report = join(
        tmp_path,
        {
            1: "American President, The (1995)",  # exact after moving the article
            2: "Seven (Se7en) (1995)",  # exact through the alternate title
            3: "U.S. Marshalls (1998)",  # typo: fuzzy
            4: "Dolores Claiborne (1994)",  # catalog dates it 1995: fuzzy, year ± 1
            5: "Toy Story (1995)",  # catalog row is 4 years off: none
            6: "Wes Craven's New Nightmare (1994)",  # partial name: fuzzy with penalty
        },
        [
            row("9087", "The American President", "1995-11-17"),
            row("807", "Se7en", "1995-09-22"),
            row("11808", "U.S. Marshals", "1998-03-06"),
            row("11929", "Dolores Claiborne", "1995-03-24"),
            row("862", "Toy Story", "1999-01-01"),
            row("11596", "New Nightmare", "1994-10-13"),
        ],
    )
    assert enriched["method"].to_dict() == {
        1: "exact",
        2: "exact",
        3: "fuzzy",
        4: "fuzzy",
        5: "none",
        6: "fuzzy",
    }
    assert enriched["catalog_id"].to_dict() == {
        1: "9087",
        2: "807",
        3: "11808",
        4: "11929",
        5: "",
        6: "11596",
    }
    assert enriched.loc[1, "score"] == 100.0
    assert enriched.loc[3, "score"] == 96.0  # token_sort_ratio('u s marshalls', 'u s marshals')
    assert enriched.loc[4, "score"] == 100.0
    assert enriched.loc[6, "score"] == 95.0  # 100 less PARTIAL_PENALTY
    assert np.isnan(enriched.loc[5, "score"])
    assert enriched.loc[5, "overview"] == ""
    assert enriched.loc[2, "overview"] == "plot of Se7en"
    assert report.by_method == {"exact": 2, "fuzzy": 3, "none": 1}
    assert report.naive_matched == 0  # no title + year is written alike on both sides


def test_naive_join_is_raw_title_and_year_only(tmp_path):
    _, report = join(
        tmp_path,
        {1: "Heat (1995)", 2: "American President, The (1995)", 3: "Sabrina (1995)"},
        [
            row("949", "Heat", "1995-12-15"),
            row("9087", "The American President", "1995-11-17"),
            row("11860", "Sabrina", "1996-01-01"),
        ],
    )
    assert report.naive_matched == 1
    assert report.matched == 3
    assert report.naive_rate == pytest.approx(1 / 3)


def test_sequel_numbers_must_agree(tmp_path):
    enriched, _ = join(
        tmp_path,
        {1: "Friday the 13th Part 2 (1981)"},
        [row("4488", "Friday the 13th", "1980-05-09")],
    )
    assert enriched.loc[1, "method"] == "none"


def test_one_to_one_serves_the_movie_with_nowhere_else_to_go(tmp_path):
    # Both want 'The Boys' of 1997 (the Quebec 'Les Boys'); the Australian 'Boys, The'
    # can fall back to the 1998 row, so it must not take the only row 'Les Boys' has.
    enriched, _ = join(
        tmp_path,
        {2695: "Boys, The (1997)", 1698: "Boys, Les (1997)"},
        [
            row("42832", "The Boys", "1997-12-05", original="Les Boys"),
            row("13821", "The Boys", "1998-05-01"),
        ],
    )
    assert enriched.loc[1698, ["catalog_id", "method"]].tolist() == ["42832", "exact"]
    assert enriched.loc[2695, ["catalog_id", "method"]].tolist() == ["13821", "fuzzy"]


def test_one_to_one_a_row_serves_one_movie_unless_it_is_the_same_film(tmp_path):
    enriched, report = join(
        tmp_path,
        {
            811: "Bewegte Mann, Der (1994)",
            860: "Maybe, Maybe Not (Bewegte Mann, Der) (1994)",  # the same film, listed twice
            1: "U.S. Marshals (1998)",
            2: "U.S. Marshalls (1998)",  # a fuzzy rival of an exact match
        },
        [
            row("159", "Maybe... Maybe Not", "1994-10-06", original="Der bewegte Mann"),
            row("11808", "U.S. Marshals", "1998-03-06"),
        ],
    )
    assert enriched.loc[811, "catalog_id"] == enriched.loc[860, "catalog_id"] == "159"
    assert enriched.loc[1, ["catalog_id", "method"]].tolist() == ["11808", "exact"]
    assert enriched.loc[2, "method"] == "none"
    assert [m["movie_id"] for m in report.unmatched] == [2]


def test_film_groups_link_movies_sharing_a_name_and_year():
    names = pd.DataFrame(
        {
            "item": [0, 1, 1, 2, 3],
            "key": ["der bewegte mann", "maybe maybe not", "der bewegte mann", "x", "x"],
            "kind": [0, 0, 1, 0, 0],
            "year": pd.array([1994, 1994, 1994, 1990, 1991], dtype="Int64"),
        }
    )
    groups = film_groups(names, 4)
    assert groups[0] == groups[1]
    assert len({groups[1], groups[2], groups[3]}) == 3  # same name, other year: other film


def test_threshold_rejects_a_score_just_below(tmp_path):
    titles = {1: "U.S. Marshalls (1998)"}
    rows = [row("11808", "U.S. Marshals", "1998-03-06")]
    keys = [fuzzy_key(normalize_title(t)) for t in ("U.S. Marshalls", "U.S. Marshals")]
    assert keys == ["u s marshalls", "u s marshals"]
    score = fuzz.token_sort_ratio(*keys)
    assert score == pytest.approx(96.0)  # 2 * 12 / (13 + 12)
    at, _ = join(tmp_path, titles, rows, threshold=score)
    above, _ = join(tmp_path, titles, rows, threshold=score + 0.01)
    assert at.loc[1, "method"] == "fuzzy"
    assert above.loc[1, "method"] == "none"


def test_default_threshold_rejects_a_one_letter_change_in_a_short_title(tmp_path):
    # Fausto (1993) is not Faust (1994): 90.9 < MATCH_THRESHOLD.
    assert fuzz.token_sort_ratio("fausto", "faust") < MATCH_THRESHOLD
    enriched, _ = join(tmp_path, {576: "Fausto (1993)"}, [row("9064", "Faust", "1994-08-18")])
    assert enriched.loc[576, "method"] == "none"


def test_unknown_year_rows_match_only_with_a_penalty(tmp_path):
    enriched, report = join(
        tmp_path,
        {752: "Vermont Is For Lovers (1992)"},
        [row("215107", "Vermont Is for Lovers", "someday")],
    )
    assert enriched.loc[752, ["method", "score"]].tolist() == ["fuzzy", 95.0]
    assert report.catalogs[0]["bad_dates"] == 1


def test_several_catalogs_best_score_then_catalog_order(tmp_path):
    movies = read_movies(
        write_movies(
            tmp_path / "movies.dat",
            {1: "U.S. Marshalls (1998)", 2: "Heat (1995)", 3: "Sabrina (1995)"},
        )
    )
    first = load_catalog(
        CatalogSpec(
            write_catalog(
                tmp_path / "a.csv",
                [row("1", "U.S. Marshalls!", "1998"), row("2", "Heat", "1995")],
            )
        )
    )
    second = load_catalog(
        CatalogSpec(
            write_catalog(
                tmp_path / "b.csv",
                [
                    row("11808", "U.S. Marshals", "1998", overview="b"),
                    row("949", "Heat", "1995"),
                    row("11860", "Sabrina", "1995"),
                ],
            )
        )
    )
    enriched, report = join_catalogs(movies, [first, second])
    enriched = enriched.set_index("movie_id")
    assert enriched.loc[1, ["catalog", "catalog_id", "method"]].tolist() == ["a", "1", "exact"]
    assert enriched.loc[2, ["catalog", "catalog_id"]].tolist() == ["a", "2"]  # tie: first
    assert enriched.loc[3, ["catalog", "catalog_id"]].tolist() == ["b", "11860"]
    assert report.by_catalog == {"a": 2, "b": 1}
    # and in the other order, 'Heat' comes from b
    enriched, _ = join_catalogs(movies, [second, first])
    assert enriched.set_index("movie_id").loc[2, "catalog"] == "b"


def test_join_output_is_one_row_per_movie_in_order(tmp_path):
    titles = {5: "Heat (1995)", 3: "Nothing Like It (1995)", 9: "Sabrina (1995)"}
    enriched, report = join(tmp_path, titles, [row("949", "Heat", "1995")])
    assert enriched.index.tolist() == [5, 3, 9]
    assert report.movies == 3
    assert "## Unmatched movies (2)" in report.to_markdown()
    assert report.to_dict()["join_rate"] == pytest.approx(0.3333)


def test_report_lists_lowest_accepted_matches_lowest_first(tmp_path):
    _, report = join(
        tmp_path,
        {1: "U.S. Marshalls (1998)", 2: "Wes Craven's New Nightmare (1994)", 3: "Heat (1995)"},
        [
            row("11808", "U.S. Marshals", "1998"),
            row("11596", "New Nightmare", "1994"),
            row("949", "Heat", "1995"),
        ],
        lowest=5,
    )
    assert [(m["movie_id"], m["score"]) for m in report.lowest_accepted] == [(2, 95.0), (1, 96.0)]


# --------------------------------------------------------------------------------------
# Bad input


def test_missing_columns_is_a_clear_error(tmp_path):
    path = write_catalog(tmp_path / "c.csv", [["1", "Heat"]], header=["id", "name"])
    with pytest.raises(DataError, match=r"c\.csv line 1: missing title column 'title'") as err:
        load_catalog(CatalogSpec(path))
    assert "--columns" in str(err.value)


def test_column_names_are_configurable(tmp_path):
    path = write_catalog(
        tmp_path / "c.csv", [["Heat", "1995", "a heist", "949"]], header=["name", "y", "plot", "k"]
    )
    spec = CatalogSpec(path).with_columns(title="name", date="y", overview="plot", id="k")
    catalog = load_catalog(spec)
    assert catalog.rows[["catalog_id", "title", "overview"]].values.tolist() == [
        ["949", "Heat", "a heist"]
    ]
    assert catalog.rows["year"].tolist() == [1995]
    with pytest.raises(ValueError, match="unknown catalog column key"):
        CatalogSpec(path).with_columns(name="title")


def test_non_utf8_catalog_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    text = "id,title,release_date,overview\n1,Heat,1995,x\n2,Misérables,1995,y\n"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv line 3: byte 0xe9 is not valid utf-8"):
        load_catalog(CatalogSpec(path))


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="catalog file not found"):
        load_catalog(CatalogSpec(tmp_path / "nope.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="catalog is empty"):
        load_catalog(CatalogSpec(tmp_path / "empty.csv"))


def test_bad_rows_are_counted_skips(tmp_path):
    path = write_catalog(
        tmp_path / "c.csv",
        [
            row("1", "Heat", "1995-12-15"),
            row("2", "", "1995"),  # empty title
            row("1", "Heat again", "1995"),  # duplicate id: first kept
            row("", "No Id", "1995"),  # empty id
            row("3", "Sabrina", "December 1995"),  # unparseable date: kept, year unknown
            ["4", "Too", "few"],  # malformed
            row("5", "Jumanji", ""),  # missing date: kept, year unknown
        ],
    )
    catalog = load_catalog(CatalogSpec(path))
    stats = catalog.stats
    assert catalog.rows["catalog_id"].tolist() == ["1", "3", "5"]
    assert catalog.rows["title"].tolist() == ["Heat", "Sabrina", "Jumanji"]
    assert catalog.rows["year"].isna().tolist() == [False, True, True]
    assert (stats.rows_read, stats.rows_kept) == (7, 3)
    assert (stats.empty_titles, stats.duplicate_ids, stats.empty_ids) == (1, 1, 1)
    assert (stats.malformed_rows, stats.bad_dates, stats.missing_dates) == (1, 1, 1)
    assert stats.truncated_rows == 0
    assert any("line 7" in n for n in stats.notes)  # the malformed row is named


def test_truncated_last_row_is_a_counted_skip(tmp_path):
    path = write_catalog(tmp_path / "c.csv", [row("1", "Heat", "1995"), row("2", "Up", "2009")])
    text = path.read_text("utf-8")
    path.write_text(text[: text.rindex(",") + 2], "utf-8")  # cut inside the last field
    catalog = load_catalog(CatalogSpec(path))
    assert catalog.rows["catalog_id"].tolist() == ["1"]
    assert catalog.stats.truncated_rows == 1
    assert "line 3: last row has no line end" in catalog.stats.notes[0]
    # cut inside a quoted overview: still one counted skip, no parser error
    path.write_text(text[: text.index("plot of Up") + 4].replace("plot of Up", '"plot'), "utf-8")
    catalog = load_catalog(CatalogSpec(path))
    assert catalog.rows["catalog_id"].tolist() == ["1"]
    assert catalog.stats.truncated_rows == 1


def test_movies_without_a_title_are_left_unmatched_and_noted(tmp_path):
    movies = pd.DataFrame(
        {
            "movie_id": [1, 2],
            "title": ["...", "Heat"],
            "year": pd.array([1995, 1995], dtype="Int64"),
        }
    )
    catalog = load_catalog(
        CatalogSpec(write_catalog(tmp_path / "c.csv", [row("9", "Heat", "1995")]))
    )
    enriched, report = join_catalogs(movies, [catalog])
    assert enriched["method"].tolist() == ["none", "exact"]
    assert report.notes == ["1 movie(s) without a usable title; left unmatched"]
    assert enriched["title"].tolist() == ["... (1995)", "Heat (1995)"]


def test_join_rejects_bad_arguments(tmp_path):
    catalog = load_catalog(
        CatalogSpec(write_catalog(tmp_path / "c.csv", [row("9", "Heat", "1995")]))
    )
    movies = pd.DataFrame({"movie_id": [1], "title": ["Heat"]})
    with pytest.raises(ValueError, match="missing year"):
        join_catalogs(movies, [catalog])
    movies["year"] = pd.array([1995], dtype="Int64")
    with pytest.raises(ValueError, match="threshold=0"):
        join_catalogs(movies, [catalog], threshold=0)
    with pytest.raises(ValueError, match="catalog names must differ"):
        join_catalogs(movies, [catalog, catalog])


# --------------------------------------------------------------------------------------
# CLI


def test_cli_writes_csv_and_reports(tmp_path, capsys):
    movies = write_movies(
        tmp_path / "movies.dat", {1: "Heat (1995)", 2: "Misérables, Les (1995)", 3: "Zzz (1990)"}
    )
    a = write_catalog(tmp_path / "a.csv", [row("949", "Heat", "1995-12-15")])
    b = write_catalog(tmp_path / "b.csv", [row("48750", "Les Misérables", "1995-03-22")])
    out = tmp_path / "out" / "enriched.csv"
    result = enrich.main(
        ["--movies", str(movies), "--catalog", str(a), "--catalog", str(b), "--out", str(out)]
    )
    table = pd.read_csv(out, dtype={"catalog_id": str}, keep_default_na=False)
    assert table["movie_id"].tolist() == [1, 2, 3]
    assert table["catalog"].tolist() == ["a", "b", ""]
    assert table["catalog_id"].tolist() == ["949", "48750", ""]
    assert table["method"].tolist() == ["exact", "exact", "none"]
    assert result["by_method"] == {"exact": 2, "fuzzy": 0, "none": 1}
    saved = json.loads((tmp_path / "out" / "enriched.report.json").read_text("utf-8"))
    assert saved["matched"] == 2 and saved["naive_matched"] == 1
    assert saved["unmatched"] == [{"movie_id": 3, "title": "Zzz (1990)"}]
    assert "# Metadata join report" in (tmp_path / "out" / "enriched.report.md").read_text()
    assert "fuzzy join: 2 (66.7%)" in capsys.readouterr().out


def test_cli_column_flags(tmp_path):
    movies = write_movies(tmp_path / "movies.dat", {1: "Heat (1995)"})
    cat = write_catalog(tmp_path / "c.csv", [["7", "Heat", "1995", "x"]], ["k", "name", "y", "p"])
    flags = ["--columns", "id=k", "--columns", "title=name", "--columns", "date=y"]
    result = enrich.main(
        ["--movies", str(movies), "--catalog", str(cat), "--out", str(tmp_path / "o.csv")]
        + flags
        + ["--columns", "overview=p"]
    )
    assert result["matched"] == 1


@pytest.mark.parametrize(
    "problem",
    ["missing_movies", "missing_catalog", "bad_columns", "bad_columns_flag", "latin1_catalog"],
)
def test_cli_user_mistakes_exit_2_with_one_line(tmp_path, capsys, problem):
    movies = write_movies(tmp_path / "movies.dat", {1: "Heat (1995)"})
    cat = write_catalog(tmp_path / "c.csv", [row("949", "Heat", "1995")])
    args = {"--movies": str(movies), "--catalog": str(cat), "--out": str(tmp_path / "o.csv")}
    extra: list[str] = []
    if problem == "missing_movies":
        args["--movies"] = str(tmp_path / "nope.dat")
    elif problem == "missing_catalog":
        args["--catalog"] = str(tmp_path / "nope.csv")
    elif problem == "bad_columns":
        args["--catalog"] = str(write_catalog(tmp_path / "d.csv", [["1"]], ["movieId"]))
    elif problem == "bad_columns_flag":
        extra = ["--columns", "name"]
    else:
        (tmp_path / "c.csv").write_bytes(
            "id,title,release_date,overview\n1,Zoé,1995,x\n".encode("latin-1")
        )
    argv = [x for kv in args.items() for x in kv] + extra
    with pytest.raises(SystemExit) as exit_info:
        enrich.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("enrich: error: ")
    assert "Traceback" not in err[0]
    assert not (tmp_path / "o.csv").exists()


# --------------------------------------------------------------------------------------
# Overview tokens (imports TensorFlow)


@pytest.mark.slow
def test_build_overview_tokens_learns_from_training_movies_only():
    from bst.text import build_overview_tokens

    enriched = pd.DataFrame(
        {
            "movie_id": [3, 1, 2, 4],
            "overview": [
                "A heist. A heist again!",
                "Toys come alive",
                "secret words only in test",
                "",
            ],
        }
    )
    vocab, tokens = build_overview_tokens(enriched, train_movie_ids=[1, 3, 4], max_tokens=4)
    assert vocab[:2] == ["", "[UNK]"]
    assert vocab[2:4] == ["heist", "a"]  # counts 2, 2: ties broken by the word, descending
    assert set(vocab[4:]) == {"toys", "come", "alive", "again"}
    assert "secret" not in vocab
    assert sorted(tokens) == [1, 2, 3, 4]
    index = {w: i for i, w in enumerate(vocab)}
    assert tokens[3] == [index["a"], index["heist"], index["a"], index["heist"]]  # truncated
    assert tokens[1] == [index["toys"], index["come"], index["alive"]]  # unpadded
    assert tokens[2] == [1, 1, 1, 1]  # unseen words are out of vocabulary
    assert tokens[4] == []
    again = build_overview_tokens(enriched.iloc[::-1], train_movie_ids=[4, 3, 1], max_tokens=4)
    assert again == (vocab, tokens)
    small_vocab, small = build_overview_tokens(enriched, [1, 3], vocab_size=4)
    assert small_vocab == ["", "[UNK]", "heist", "a"]
    assert small[1] == [1, 1, 1]


# --------------------------------------------------------------------------------------
# Real data


def shared_data_dir() -> Path:
    env = os.environ.get("BST_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.realdata
def test_real_join_meets_precision_and_recall_on_labeled_sample():
    data = shared_data_dir()
    needed = [
        data / "ml-1m" / "movies.dat",
        data / "catalogs" / "movies_metadata.csv",
        data / "catalogs" / "tmdb_5000_movies.csv",
        data / "catalogs" / "labels_sample.csv",
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"shared data absent (set BST_DATA_DIR): {', '.join(missing)}")
    movies = read_movies(needed[0])
    catalogs = [load_catalog(CatalogSpec(p)) for p in needed[1:3]]
    enriched, report = join_catalogs(movies, catalogs)

    assert len(enriched) == 3883 and enriched["movie_id"].is_unique
    assert 0.45 < report.naive_rate < 0.55  # the naive join links about half
    assert report.join_rate > 0.80
    stats = {s["catalog"]: s for s in report.catalogs}
    assert stats["movies_metadata"]["truncated_rows"] == 1
    assert stats["movies_metadata"]["duplicate_ids"] == 1
    # one-to-one within a catalog, except films ML-1M lists twice (811/860, 1741/1795)
    for label in ("movies_metadata", "tmdb_5000_movies"):
        ids = enriched.loc[enriched["catalog"] == label, "catalog_id"]
        assert ids.duplicated().sum() <= 2

    labels = pd.read_csv(needed[3]).dropna(subset=["tmdbId"])
    labels["tmdb"] = labels["tmdbId"].astype("int64").astype(str)
    merged = labels.merge(enriched, left_on="movieId", right_on="movie_id")
    ids = set().union(*(set(c.rows["catalog_id"]) for c in catalogs))
    in_catalog = merged["tmdb"].isin(ids)
    matched = merged["method"] != "none"
    correct = matched & (merged["catalog_id"] == merged["tmdb"])
    assert int(in_catalog.sum()) == 415
    precision = correct.sum() / matched.sum()
    recall = correct.sum() / in_catalog.sum()
    assert precision >= 0.995, merged[matched & ~correct][["movieId", "title_x", "catalog_title"]]
    assert recall >= 0.97


def test_header_only_catalog_matches_nothing(tmp_path):
    enriched, report = join(tmp_path, {1: "Heat (1995)"}, [])
    assert enriched["method"].tolist() == ["none"]
    assert report.catalogs[0]["rows_kept"] == 0


def test_oversized_field_is_a_clear_error(tmp_path):
    path = write_catalog(tmp_path / "c.csv", [row("1", "Heat", "1995", overview="x" * 200_000)])
    with pytest.raises(DataError, match=r"c\.csv line 2: cannot parse the CSV row"):
        load_catalog(CatalogSpec(path))

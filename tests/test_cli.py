"""One set of command-line conventions: the SavedModel folder is --model-dir everywhere,
former spellings still work (hidden from --help), and the data flags of bst.train and
pipelines.prepare are the same flags with the same help and errors."""

from __future__ import annotations

import pytest

from bst import cli
from bst.errors import UsageError
from pipelines import prepare as prepare_cli


def help_of(command: str) -> str:
    return cli.COMMANDS[command][0]().format_help()


@pytest.mark.parametrize("command", ["train", "export", "recommend", "serve"])
def test_the_savedmodel_folder_is_model_dir_in_every_command(command):
    assert "--model-dir" in help_of(command)


@pytest.mark.parametrize(
    "command, argv, dest, value",
    [
        ("train", ["--preset", "tiny", "--export-dir", "m"], "export_dir", "m"),
        ("train", ["--preset", "tiny", "--export-dir", ""], "export_dir", ""),
        ("export", ["--run-dir", "r", "--out", "m"], "model_dir", "m"),
        ("export", ["--run-dir", "r", "--k", "7"], "top_k", 7),
        ("recommend", ["--run-dir", "r", "--user", "1", "--model", "m"], "model_dir", "m"),
        ("evaluate", ["--run-dir", "r", "--batch-size", "64"], "users_per_batch", 64),
    ],
)
def test_former_spellings_still_work_and_are_hidden(command, argv, dest, value):
    assert getattr(cli.parse(command, argv), dest) == value
    old = next(a for a in argv if a in ("--export-dir", "--out", "--k", "--model", "--batch-size"))
    assert f"{old} " not in help_of(command) and f"{old}," not in help_of(command)


@pytest.mark.parametrize(
    "command, argv, message",
    [
        (
            "export",
            ["--run-dir", "r", "--out", "a", "--model-dir", "b"],
            "--out is the former name of --model-dir: give one of them",
        ),
        (
            "export",
            ["--run-dir", "r", "--k", "0"],
            "--k must be >= 1, got 0",  # the flag the user typed
        ),
        ("export", ["--run-dir", "r", "--top-k", "0"], "--top-k must be >= 1, got 0"),
        (
            "evaluate",
            ["--run-dir", "r", "--users-per-batch", "0"],
            "--users-per-batch must be >= 1, got 0",
        ),
    ],
)
def test_alias_mistakes_name_the_flag_given(command, argv, message):
    with pytest.raises(UsageError) as err:
        cli.parse(command, argv)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "argv",
    [
        ["--preset", "tiny", "--no-export", "--model-dir", "m"],
        ["--preset", "tiny", "--export-dir", "", "--model-dir", "m"],
        ["--run-dir", "r", "--user", "1", "--model", "m", "--server", "http://x"],
    ],
)
def test_exclusive_flags_are_refused_by_argparse(argv, capsys):
    command = "recommend" if "--user" in argv else "train"
    with pytest.raises(SystemExit) as exit_:
        cli.parse(command, argv)
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _data_actions(parser) -> dict[str, str]:
    return {
        a.option_strings[0]: a.help
        for a in parser._actions
        if a.option_strings and a.option_strings[0] in cli.DATA_FLAGS
    }


def test_train_and_prepare_take_the_same_data_flags_with_the_same_help():
    train = _data_actions(cli.train_parser())
    prepare = _data_actions(prepare_cli.parser())
    assert set(train) == set(prepare) == set(cli.DATA_FLAGS)
    for flag in cli.DATA_FLAGS:
        if flag != "--catalog":  # says where each writes the join
            assert train[flag] == prepare[flag], flag
    assert "<run-dir>/enriched" in train["--catalog"]
    assert "<out>-enriched/" in prepare["--catalog"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cold-fraction", "0.9"], "--cold-fraction must be in [0, 0.5], got 0.9"),
        (["--num-shards", "0"], "--num-shards must be in [1, 4096], got 0"),
        (["--catalog", "nowhere.csv"], "--catalog nowhere.csv: file not found"),
        (["--enriched", "nowhere.csv"], "--enriched nowhere.csv: file not found"),
        (
            ["--num-shards", "2", "--set", "data.num_shards=3"],
            "--num-shards and --set data.num_shards are both given: give one of them",
        ),
        (
            ["--cold-fraction", "0.1"],
            "--cold-fraction (data.cold_fraction) 0.1 holds out movies that have an overview: "
            "give --catalog or --enriched too",
        ),
    ],
)
def test_train_and_prepare_give_the_same_errors_for_the_same_data_flags(flags, message):
    base = ["--set", "data.synthetic=false"]  # bst.train's tiny preset is synthetic
    with pytest.raises(UsageError) as in_train:
        cli.parse("train", ["--preset", "tiny", *base, *flags])
    with pytest.raises(UsageError) as in_prepare:
        prepare_cli.parse(["--out", "o", *flags])
    assert str(in_train.value) == str(in_prepare.value) == message


def test_prepare_with_catalogs_joins_beside_the_prepared_folder(tmp_path):
    assert prepare_cli.enriched_dir(tmp_path / "p") == tmp_path / "p-enriched"


def test_enrich_names_its_detail_flag_debug_and_still_takes_verbose():
    from pipelines import enrich

    parser = enrich.build_parser()
    base = ["--movies", "m.dat", "--catalog", "c.csv", "--out", "o.csv"]
    assert parser.parse_args([*base, "--debug"]).debug
    assert parser.parse_args([*base, "-v"]).debug and parser.parse_args([*base, "--verbose"]).debug
    assert not parser.parse_args(base).debug
    assert "--debug" in parser.format_help() and "--verbose" not in parser.format_help()

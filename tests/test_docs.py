"""The manual cannot drift from the code: every command in README.md and docs/*.md
parses with the real argument parsers, every ``--set`` key is a config field, and
every link between the pages resolves."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from bst import cli, config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
COMMAND = re.compile(r"python -m ((?:bst|pipelines)(?:\.\w+)+)((?:[^\n#]|\\\n)*)")
SET_KEY = re.compile(r"--set[ =]([a-z_]+\.[a-z_]+)=")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from bst.data.synthetic import parser as synthetic_parser
    from pipelines.enrich import build_parser as enrich_parser
    from pipelines.prepare import parser as prepare_parser

    parsers = {f"bst.{name}": build() for name, (build, _) in cli.COMMANDS.items()}
    parsers.update(
        {
            "pipelines.prepare": prepare_parser(),
            "pipelines.enrich": enrich_parser(),
            "bst.data.synthetic": synthetic_parser(),
        }
    )
    return parsers


def shell_commands() -> list[tuple[str, str, list[str]]]:
    """``(page, module, argv)`` of every ``python -m bst.* / pipelines.*`` command in the
    pages' bash code blocks (continuation lines joined, comments dropped)."""
    found = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text(encoding="utf-8")):
            if lang not in ("bash", "sh", "shell"):
                continue
            body = body.replace("\\\n", " ")
            for line in body.splitlines():
                line = line.split(" #", 1)[0]
                for module, rest in COMMAND.findall(line):
                    rest = rest.split("&&")[0].split("|")[0].split(">")[0].strip().rstrip(")")
                    found.append((page.name, module, shlex.split(rest)))
    return found


COMMANDS = shell_commands()


def test_the_pages_hold_commands_of_every_stage():
    modules = {module for _, module, _ in COMMANDS}
    for module in ("bst.train", "bst.evaluate", "bst.recommend", "bst.export", "bst.serve"):
        assert module in modules, module
    assert "pipelines.prepare" in modules and "bst.data.synthetic" in modules


@pytest.mark.parametrize(
    "page, module, argv", COMMANDS, ids=[f"{p}:{m}:{' '.join(a)[:40]}" for p, m, a in COMMANDS]
)
def test_every_documented_command_parses(page, module, argv, capsys):
    """The flags and their values in the docs are the ones the command takes."""
    parsers = _parsers()
    assert module in parsers, f"{page} names python -m {module}, which is not a command"
    if module == "pipelines.prepare" and "--" in argv:  # Beam's own options follow "--"
        argv, beam_args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
        assert beam_args and "beam" in argv, f"{page}: options after -- need --runner beam"
        try:
            import apache_beam  # noqa: F401
        except ImportError:
            pass
        else:
            from bst.data.beam import pipeline_options

            pipeline_options(beam_args)  # every option known to Beam
    try:
        parsers[module].parse_args(argv)
    except SystemExit:
        err = capsys.readouterr().err.strip().splitlines()[-1:]
        pytest.fail(f"{page}: python -m {module} {' '.join(argv)}: {err}")


def _fields(section) -> set[str]:
    return {f.name for f in dataclasses.fields(section)}


def test_every_set_key_in_the_docs_is_a_config_field():
    cfg = config.ml1m()
    known = {
        f"{name}.{field}"
        for name in ("data", "model", "train")
        for field in _fields(getattr(cfg, name))
    }
    seen = set()
    for page in PAGES:
        for key in SET_KEY.findall(page.read_text(encoding="utf-8")):
            assert key in known, f"{page.name}: --set {key}= is not a config field"
            seen.add(key)
    assert seen  # the pattern finds the docs' overrides


def test_every_config_field_is_in_the_manual():
    """A field added to bst/config.py without a line in training.md or data.md fails."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    text += (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    cfg = config.ml1m()
    for name in ("data", "model", "train"):
        for field in _fields(getattr(cfg, name)):
            assert f"{name}.{field}" in text, f"{name}.{field} is not in docs/"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page."""
    anchors = set()
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_links_between_the_pages_resolve():
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name}: link to {target}: no such file"
            if anchor and file.suffix == ".md":
                assert anchor in _anchors(file), f"{page.name}: link to {target}: no such heading"


def test_the_readme_is_a_front_door():
    """At most about 200 lines, with the two commands CI runs and a link to each page."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 210
    assert "python -m bst.train" in readme and "python -m pytest" in readme
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"the README does not link docs/{page.name}"

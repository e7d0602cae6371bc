"""The generated reference pages (command line, configuration keys, store schema) match the code
they describe; ``make docs-cli`` regenerates them. Checked independently of the generator too: every
subcommand and flag of the parser, every config key and every registered store variable is on its page."""

import argparse
import importlib.util

import pytest

from docs_blocks import ROOT

REFERENCE = ROOT / "docs" / "reference"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "scripts" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_up_to_date(generator):
    assert generator.stale_pages() == [], "generated reference pages are out of date: run `make docs-cli`"


def _subcommands(parser, path=("dynamics",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _subcommands(child, (*path, name))


def test_cli_page_names_every_command_and_flag():
    from dynamics.cli import build_parser

    page = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    for path, parser in _subcommands(build_parser()):
        section = page.split(f"`{' '.join(path)}`\n", 1)
        assert len(section) == 2, f"no section for {' '.join(path)}"
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in section[1], f"{' '.join(path)} {flag} is not on the page"


def test_config_page_names_every_key():
    from trainers.config import json_schema

    page = (REFERENCE / "config.md").read_text(encoding="utf-8")
    schema = json_schema()
    for table, model in (("data", "DataConfig"), ("model", "ModelConfig"), ("train", "TrainConfig")):
        for key in schema["$defs"][model]["properties"]:
            assert f"`{table}.{key}`" in page, f"{table}.{key}"
    for kind, model in schema["optimizer_kinds"].items():
        for key in model["properties"]:
            assert f"`optimizers.{kind}.{key}`" in page, f"optimizers.{kind}.{key}"


def test_store_page_names_every_registered_variable():
    from dynamics.store import attributes

    page = (REFERENCE / "store-schema.md").read_text(encoding="utf-8")
    for group in ("metrics", "checkpoints", "params", "probe", "analysis"):
        section = page.split(f"## `{group}`", 1)[1].split("\n## ", 1)[0]
        for name in attributes.known_names(group):
            assert f"| `{name}` | {attributes.entry(group, name)[0]} |" in section.replace("\\_", "_"), (group, name)


def test_a_new_flag_makes_the_cli_page_stale(generator, monkeypatch):
    """The staleness check can fail: a flag added to the parser changes the page."""
    import dynamics.cli

    original = dynamics.cli.build_parser

    def with_new_flag():
        parser = original()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                action.choices["report"].add_argument("--brand-new", action="store_true", help="a flag <added> in a *branch* | here")
        return parser

    monkeypatch.setattr(dynamics.cli, "build_parser", with_new_flag)
    page = generator.cli_page()
    assert "`--brand-new`" in page and "a flag &lt;added&gt; in a \\*branch\\* \\| here" in page
    assert "cli.md" in generator.stale_pages()


def test_md_text_shows_text_as_written(generator):
    assert generator.md_text("runs/<name> and blocks__0 | `a|b` and ``x_y``") == (
        "runs/&lt;name&gt; and blocks\\_\\_0 \\| `a\\|b` and `x_y`")

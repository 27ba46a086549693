"""The docs stay true: docs/configuration.md lists exactly the settings the code has, and the
README's links and first commands point at things that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernel_bridge.cli import build_parser
from kernel_bridge.executors import ShellExecutor
from kernel_bridge.kernel import Kernel
from kernel_bridge.magic import ReasonMagics

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the ``## title`` section of docs/configuration.md."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", CONFIGURATION, re.M | re.S)
    assert match, f"docs/configuration.md has no section '## {title}'"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of each table row in ``text``; a header (the row above a rule) is left out."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if re.fullmatch(r"\|[-:| ]+\|", line):
            rows.pop()  # the header
        elif line.startswith("|"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def names_in_column(text: str, index: int) -> list[list[str]]:
    """The backticked names in column ``index`` of each table row of ``text``."""
    return [re.findall(r"`([^`]+)`", row[index]) for row in table_rows(text)]


def reason_flags() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    reason = sub.choices["reason"]
    return {
        flag for a in reason._actions for flag in a.option_strings if flag not in ("-h", "--help")
    }


def test_every_cli_flag_of_reason_has_its_row_and_no_more():
    rows = names_in_column(section("The CLI: `kernel-bridge reason`"), 0)
    documented = {name for names in rows for name in names}
    assert documented == reason_flags()


@pytest.mark.parametrize(
    "cls, title",
    [
        (ReasonMagics, "The `%%reason` magic"),
        (Kernel, "The kernel (`c.Kernel`)"),
        (ShellExecutor, "Shared mode (`c.ShellExecutor`)"),
    ],
)
def test_every_traitlet_has_its_row_and_no_more(cls, title):
    documented = {names[0] for names in names_in_column(section(title), 0) if names}
    assert documented == set(cls.class_traits(config=True))


def test_every_magic_option_has_its_row():
    from IPython.core.magic_arguments import construct_parser

    parser = construct_parser(ReasonMagics.reason)
    options = {f for a in parser._actions for f in a.option_strings if f not in ("-h", "--help")}
    rows = names_in_column(section("The `%%reason` magic"), 1)
    assert {flag for names in rows for flag in names} == options


def test_every_environment_variable_the_code_reads_is_documented():
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "kernel_bridge").rglob("*.py"))
    names = set(re.findall(r"\bKERNEL_BRIDGE_[A-Z_]+\b", code))
    names |= set(re.findall(r"\bKERNEL_BRIDGE_[A-Z_]+\b", _notebook_sources()))
    documented = section("Environment variables")
    assert names, "no KERNEL_BRIDGE_* variable found in the code"
    missing = sorted(n for n in names if f"`{n}`" not in documented)
    assert not missing, f"undocumented environment variables: {missing}"


def _notebook_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert blocks[0].startswith('pip install torch==2.13.0 -e ".[local]" && kernel-bridge reason "')
    assert blocks[1].startswith("bash .ci/run")
    assert (ROOT / ".ci" / "run").is_file()


def test_readme_and_docs_link_to_files_that_exist():
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = (doc.parent / target).resolve()
            assert path.exists(), f"{doc.name} links to a missing {target}"

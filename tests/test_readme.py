"""The README's command list matches the command line: every command and option."""

from __future__ import annotations

import re
from pathlib import Path

import click

from viber_exporter.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


def command_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)


def test_every_command_and_option_is_in_the_readme():
    block = command_block()
    for path, command in commands(cli):
        line = next((ln for ln in block.splitlines() if ln.startswith(f"viber-exporter {' '.join(path)} ")), None)
        assert line is not None, f"README's command list lacks `viber-exporter {' '.join(path)}`"
        documented = set(re.findall(r"--[a-z-]+", block[block.index(line):].split("\nviber-exporter ")[0]))
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                long = next(o for o in param.opts if o.startswith("--"))
                assert long in documented, f"{' '.join(path)}: {long} is not in the README"


def test_the_readme_lists_no_command_that_does_not_exist():
    paths = {" ".join(path) for path, _ in commands(cli)}
    for line in command_block().splitlines():
        if line.startswith("viber-exporter ") and not line.startswith("viber-exporter --"):
            words = line.split()[1:]
            name = " ".join(w for w in words[:2] if re.fullmatch(r"[a-z-]+", w))
            assert name in paths or name.split()[0] in paths, line


def test_the_metrics_reference_lists_every_metric_the_exporter_serves(make_config, run_exporter):
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    exporter = run_exporter(make_config())
    served = set()
    for family in text_string_to_metric_families(generate_latest(exporter.registry).decode()):
        if family.name.startswith("viber_"):
            served.add(family.name + ("_total" if family.type == "counter" else ""))
    text = (README.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(viber_[a-z_]+)`", text, re.MULTILINE))
    assert served - documented == set(), "served but not in docs/metrics.md's table"
    assert documented - served == set(), "in docs/metrics.md's table but not served"


def test_the_contents_line_links_every_section_and_nothing_else():
    text = README.read_text(encoding="utf-8")
    contents = next(line for line in text.splitlines() if line.startswith("**Contents:**"))
    linked = re.findall(r"\]\(#([a-z0-9-]+)\)", contents)

    def anchor(heading: str) -> str:  # GitHub's: lower case, punctuation dropped, spaces to dashes
        return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")

    sections = [anchor(line[3:].strip()) for line in text.splitlines() if line.startswith("## ")]
    assert linked == sections
    for target in re.findall(r"\]\((https://[^)]+)\)", contents):
        assert local(target).exists(), target


#: the repository's address, which the README's links to files use (PyPI renders the
#: README away from the repository) and the alert rules' runbook links too
REPOSITORY = "https://github.com/viber-exporter/viber-exporter"


def local(url: str) -> Path:
    """The file of this checkout that a link into the repository points at."""
    path = re.sub(rf"^{re.escape(REPOSITORY)}/(blob|tree)/main/", "", url).partition("#")[0]
    assert not path.startswith("http"), f"{url} is not a link into {REPOSITORY}"
    return README.parent / path


def test_every_link_in_the_readme_and_docs_leads_somewhere():
    """The README and docs/ link each other and the repository's files: every link into
    the repository (absolute in the README, relative elsewhere) names a file that
    exists, and every #anchor a heading of its target."""
    root = README.parent

    def anchors(path: Path) -> set[str]:
        return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")}

    for page in [README, root / "CONTRIBUTING.md", *sorted((root / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(REPOSITORY + "/"):
                resolved, anchor = local(target).resolve(), target.partition("#")[2]
                assert resolved.exists(), f"{page.name}: {target} leads nowhere"
                if anchor and resolved.suffix == ".md":
                    assert anchor in anchors(resolved), f"{page.name}: #{anchor} is not a heading of {resolved.name}"
                continue
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert page != README or target.startswith("#"), f"README: {target} is relative (PyPI shows the README alone)"
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: {target} leads nowhere"
            if anchor and resolved.suffix == ".md":
                assert anchor in anchors(resolved), f"{page.name}: #{anchor} is not a heading of {resolved.name}"

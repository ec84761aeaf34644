"""Results-section page for the gate explorer's browser check (``scripts/check_explorer_browser.py``): the check
writes only markdown, so its bullets are quoted as written, under the command named in its title."""

from __future__ import annotations

from pathlib import Path

from .report_sources import display, missing, title_command

STEM = "explorer_browser"
TITLE = "The gate explorer in a browser"


def bullets(markdown: Path) -> list[str]:
    """Every bullet line of the file, nested ones included, verbatim."""
    return [line for line in markdown.read_text().splitlines() if line.lstrip().startswith("- ")]


def explorer_section(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    markdown = results_dir / f"{STEM}.md"
    absent = missing(TITLE, [markdown], results_dir)
    if absent:
        return absent
    command = title_command(markdown)
    if command is None:
        raise ValueError(f"{markdown}: its title names no `scripts/....py` command; expected the title that "
                         "scripts/check_explorer_browser.py writes")
    lines = bullets(markdown)
    if not lines:
        raise ValueError(f"{markdown}: no bullet lines to quote; expected the report scripts/check_explorer_browser.py "
                         "writes")
    return "\n".join([f"## {TITLE}\n", f"Written by `python {command}` to `{display(markdown, results_dir)}`; its "
                      "lines as written (machine and date in the first):\n", "\n".join(lines) + "\n"])

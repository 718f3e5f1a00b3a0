"""The code of the documentation as a reader copies it: the fenced blocks of the READMEs, and the example of
``tollbooth_client``'s docstring (the block after its ``::``)."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
READMES: Final = (ROOT / "README.md", ROOT / "clients" / "python" / "README.md", ROOT / "clients" / "ts" / "README.md")
CLIENT_INIT: Final = ROOT / "tollbooth_client" / "__init__.py"

_FENCE: Final = re.compile(r"^```(?P<language>[a-z]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Snippet:
    path: Path
    line: int
    """Of the opening fence (of the code, in a docstring)."""
    language: str
    code: str

    @property
    def where(self) -> str:
        """``README.md:182``, for test ids and failure messages."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced(path: Path, language: str | None = None) -> list[Snippet]:
    """The fenced blocks of a Markdown file, in order; only those in ``language`` when given."""
    text = path.read_text(encoding="utf-8")
    blocks = (
        Snippet(path, text.count("\n", 0, match.start()) + 1, match["language"], match["code"])
        for match in _FENCE.finditer(text)
    )
    return [block for block in blocks if language in (None, block.language)]


def docstring_example(path: Path) -> Snippet:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
    head, marker, rest = docstring.partition("::\n\n")
    assert marker, f"{path.relative_to(ROOT)}: no example (a block after '::') in the docstring"
    lines = rest.splitlines()
    end = next((i for i, line in enumerate(lines) if line and not line.startswith(" ")), len(lines))
    line = head.count("\n") + 3  # the docstring opens on line 1; its block, after the "::" line and a blank one
    return Snippet(path, line, "python", textwrap.dedent("\n".join(lines[:end])).strip() + "\n")


def python_snippets() -> list[Snippet]:
    """Every Python example a reader may paste: each one a whole program."""
    return [snippet for readme in READMES for snippet in fenced(readme, "python")] + [docstring_example(CLIENT_INIT)]

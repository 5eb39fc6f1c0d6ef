"""A small reader of the repository's Dockerfile (instructions per stage), for the tests that check it
and run its final stage's command without a Docker engine."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    text: str

    def exec_form(self) -> list[str]:
        """A JSON-array argument (`CMD ["a", "b"]`), or the words of a shell-form one."""
        text = self.text.strip()
        if text.startswith("["):
            return [str(word) for word in json.loads(text)]
        return shlex.split(text)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"{len(found)} {keyword} instructions in the stage from {self.base}"
        return found[0]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.text):
                name, _, value = word.partition("=")
                values[name] = value
        return values


def instructions(text: str) -> list[Instruction]:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append(Instruction(keyword.upper(), rest.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    found: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.text.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        else:
            assert found, f"{instruction.keyword} before any FROM"
            found[-1].instructions.append(instruction)
    return found

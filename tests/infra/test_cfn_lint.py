"""cfn-lint on every synthesized template: no errors; warnings only from this documented list.

W3005 (redundant DependsOn): CDK adds DependsOn from a function to its role's default policy
although the function also references the role with GetAtt; the template is CDK-generated.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file

from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

ALLOWED_WARNINGS = {"W3005"}


def test_templates_lint_clean(each: Synth) -> None:
    config = ManualArgs(regions=["us-east-1"])
    problems = []
    for path in sorted(Path(each.outdir).glob("*.template.json")):
        for match in lint_file(path, config=config):
            rule = match.rule.id
            if rule.startswith("W") and rule in ALLOWED_WARNINGS:
                continue
            if rule.startswith("I"):
                continue
            problems.append(f"{path.name}: {rule} {match.message} ({match.path})")
    assert problems == [], "\n".join(problems)

"""cdk-nag (AwsSolutions + Serverless), run inside each synth: zero unacknowledged findings.

The CDK validation report also carries CDK's own CloudFormation checks and construct annotations;
those must be clean too, except the warning the test synths add on purpose (code-only bundle).
"""

from __future__ import annotations

import pytest

from infra import nag
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

EXPECTED_IN_TEST_SYNTHS = {"Annotation::eventstack:code-only"}


def test_no_unacknowledged_findings(each: Synth) -> None:
    findings = [
        f"{report['pluginName']}: {violation['ruleName']} ({violation['severity']}) at "
        + ", ".join(c["constructPath"] for c in violation["violatingConstructs"])
        for report in each.report()["pluginReports"]
        for violation in report["violations"]
        if violation["ruleName"] not in EXPECTED_IN_TEST_SYNTHS
    ]
    assert findings == [], "\n".join(findings)
    packs = {report["pluginName"] for report in each.report()["pluginReports"]}
    assert {"AwsSolutions", "Serverless"} <= packs
    assert each.error is None or "ValidationFailed" not in each.error, each.error


def test_every_acknowledgment_has_a_reason() -> None:
    tables = [value for name, value in vars(nag).items() if name.endswith("_ACKS")]
    assert tables
    for table in tables:
        for rule, reason in table.items():
            assert rule.count("::") >= 1 and len(reason) > 40, rule

#!/usr/bin/env python3
"""The CDK app: `python app.py` (or `npx aws-cdk synth -c stage=prod`) synthesizes every stack.

Stacks are environment-agnostic: no account or region is looked up, so synth needs neither
network (once the Lambda dependencies are cached, see infra/bundling.py) nor credentials.
"""

from __future__ import annotations

import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App

from infra.application import build, context_defaults


def main() -> None:
    # cdk.json's context also applies when this file is run directly (the CLI passes it itself;
    # what the CLI passes, e.g. -c stage=prod, wins over these defaults).
    # Run directly, write where the CLI would (the CLI sets CDK_OUTDIR itself).
    outdir = None if os.environ.get("CDK_OUTDIR") else "cdk.out"
    app = App(context=context_defaults(), outdir=outdir)
    build(app)
    app.synth()


if __name__ == "__main__":
    main()

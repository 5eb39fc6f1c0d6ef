"""Stacks: wiring only. `eventstack-<stage>-shared` and one `eventstack-<stage>-<service>` each."""

"""The CDK app of eventstack: one construct per concern, stacks that only wire them.

Everything is built from `eventstack.topology.TOPOLOGY`; stage settings come from `infra.stages`.
"""

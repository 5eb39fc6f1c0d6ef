"""Helpers shared by the test tiers: an API client over API Gateway proxy events, moto tables, fakes."""

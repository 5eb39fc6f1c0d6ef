"""The archive as an audit log: SQL over it (DuckDB locally, Athena on AWS), a request's trace, a stream's history."""

-- Every archived event of one request: the de-duplicated archive (`events`) whose metadata's
-- correlation_id is the parameter correlation_id, with when its object was archived (eventstack trace).
-- The causal order is made in Python (eventstack.audit.trace.causal_order); this one is the fallback.
SELECT
    event_id,
    stream_id,
    version,
    type,
    schema_version,
    service,
    occurred_at,
    data,
    metadata,
    archived_at
FROM events
WHERE json_extract_string(metadata, '$.correlation_id') = $correlation_id
ORDER BY occurred_at, stream_id, version

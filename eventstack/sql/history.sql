-- Every archived event of one stream, in version order, with when its object was archived
-- (eventstack history). `events` is the archive de-duplicated by event_id; --at is applied in
-- Python, where the fold runs, so one query serves every instant.
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
WHERE stream_id = $stream_id
ORDER BY version, archived_at

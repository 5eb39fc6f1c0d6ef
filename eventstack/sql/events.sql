-- events: events_raw de-duplicated by event_id, the first archived copy kept (earliest archived_at,
-- then key). Firehose delivers at least once, so the same envelope can sit in several objects.
SELECT
    event_id, stream_id, version, type, schema_version, service, occurred_at, data, metadata,
    year, month, day, hour, archive_key, archived_at
FROM (
    SELECT
        *,
        row_number() OVER (PARTITION BY event_id ORDER BY archived_at, archive_key) AS archived_copy
    FROM events_raw
) AS numbered
WHERE archived_copy = 1

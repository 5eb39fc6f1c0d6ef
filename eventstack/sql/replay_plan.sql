-- The replay plan (docs/replay.md, "The plan"): the window's events de-duplicated by event_id,
-- bucketed by stream, each bucket in (stream_id, version) order, every line exactly as archived.
-- Reads `plan_lines(line, origin, archive_key)`: origin 0 for an archived line (archive_key: its
-- object's key), 1 for a stream record up to the cuts (archive_key: '<stream>/<shard>/<sequence>');
-- the first copy of an event by (origin, archive_key, line) is kept, so the archive's first copy.
-- A line without a string event_id and stream_id and an integer version is left out here and
-- counted by replay_plan_check.sql. $buckets is the bucket count N: a stream's bucket is the top
-- 32 bits of MD5(stream_id) times N, shifted right by 32 (escore.replay_file.stream_bucket, the
-- rule `--shard i/n` uses too). Run as it is by DuckDB; transpiled for Athena by eventstack.sql.
WITH parsed AS (
    SELECT
        line,
        origin,
        archive_key,
        TRY(json_extract_string(line, '$.event_id')) AS event_id,
        TRY(json_extract_string(line, '$.stream_id')) AS stream_id,
        TRY_CAST(TRY(json_extract_string(line, '$.version')) AS BIGINT) AS version
    FROM plan_lines
),
ranked AS (
    SELECT
        line,
        stream_id,
        version,
        row_number() OVER (PARTITION BY event_id ORDER BY origin, archive_key, line) AS nth
    FROM parsed
    WHERE event_id IS NOT NULL AND stream_id IS NOT NULL AND version IS NOT NULL
)
SELECT
    CAST((CAST(('0x' || substr(md5(stream_id), 1, 8)) AS UBIGINT) * $buckets) >> 32 AS INTEGER) AS bucket,
    line
FROM ranked
WHERE nth = 1
ORDER BY bucket, stream_id, version

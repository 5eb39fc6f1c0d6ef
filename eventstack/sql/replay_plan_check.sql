-- The lines of the replay plan's input (`plan_lines`, as in replay_plan.sql) that are not envelopes
-- the plan can place: not JSON, or without a string event_id and stream_id and an integer version.
-- One row per line (at most $limit), with its origin and archive_key; the replay reports them and
-- does not switch. The other checks (a version missing, two events at one version) are the
-- workers', which read each stream in order (escore.replay_file).
SELECT
    origin,
    archive_key,
    substr(line, 1, 200) AS line
FROM plan_lines
WHERE TRY(json_extract_string(line, '$.event_id')) IS NULL
    OR TRY(json_extract_string(line, '$.stream_id')) IS NULL
    OR TRY_CAST(TRY(json_extract_string(line, '$.version')) AS BIGINT) IS NULL
ORDER BY origin, archive_key
LIMIT $limit

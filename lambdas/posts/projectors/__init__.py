"""The read models the posts service owns, one module each (`hashtag_counts`).

Each module exposes `PROJECTION` (an `escore.projection.ProjectionSpec`: the pure fold, what the
replay tool feeds archived events through), `build(env, **collaborators)` and `handler = lazy(build)`
(the Kinesis projector Lambda). Item layouts are in each module; `posts.readmodels` reads them.
"""

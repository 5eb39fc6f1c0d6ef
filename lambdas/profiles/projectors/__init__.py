"""The read models the profiles service owns, one module each (`user_profiles`, `user_timeline`).

Each module exposes `PROJECTION` (an `escore.projection.ProjectionSpec`: the pure fold, what the
replay tool feeds archived events through), `build(env, **collaborators)` and `handler = lazy(build)`
(the Kinesis projector Lambda). Item layouts are in each module; `profiles.readmodels` reads them.
"""

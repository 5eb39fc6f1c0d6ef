"""The read models the notifications service owns: `user_notifications` (folds and effects)."""

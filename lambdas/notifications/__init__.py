"""The notifications service: tells a user when a post mentions their `@handle` (docs/notifications.md)."""

"""The answers web: units answer from the link in their letter, supervisors review."""

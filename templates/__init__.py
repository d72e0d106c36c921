"""The bundled message templates (the repository's templates/, installed as reminder.templates)."""

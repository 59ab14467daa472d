"""The composite's output tags: {REPORTS: DriftReport, DEAD_LETTERS: DeadLetter}."""

REPORTS = "reports"
DEAD_LETTERS = "dead_letters"

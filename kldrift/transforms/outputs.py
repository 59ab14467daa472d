"""The composite's output tags: {REPORTS: DriftReport, SUMMARIES: WindowSummary, DEAD_LETTERS:
DeadLetter}."""

REPORTS = "reports"
SUMMARIES = "summaries"
DEAD_LETTERS = "dead_letters"

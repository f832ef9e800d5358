"""``sfd eval``: the evaluation runner, datasets by name, LR/HR pairing, the supplement's tables, reports.

Metrics come from ``sfd.metrics`` and generators run through ``sfd.inference``; nothing here adds
a metric or an inference rule of its own."""

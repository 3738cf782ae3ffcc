"""``pesigitgd``: the supervisor, its workers and everything around them (settings,
health checks, neighbours, the status socket and its reports, daemon plumbing)."""

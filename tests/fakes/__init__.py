"""Local fakes of the external services the gateway talks to, for tests and benchmarks."""

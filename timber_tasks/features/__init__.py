"""Cross-cutting features the YAML switches on: encryption, caching, app isolation."""

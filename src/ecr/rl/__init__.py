"""ecr.rl."""

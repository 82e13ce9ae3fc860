"""ecr.teachers."""

"""ecr.modules."""

"""ecr.models."""

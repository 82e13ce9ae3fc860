"""ecr: emotion recognition with explanations that agree with the prediction (the ERV method)."""

__version__ = "0.1.0"

"""mentor: teach small language models to reason from feedback."""

__version__ = "0.1.0"

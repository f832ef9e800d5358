"""SFD: Semantic Feature Discrimination for perceptual super-resolution, and SFD-IQA."""

__version__ = "0.1.0"

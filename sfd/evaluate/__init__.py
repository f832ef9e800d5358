"""Evaluation: full-reference and no-reference metrics, super-resolution of folders, reports."""

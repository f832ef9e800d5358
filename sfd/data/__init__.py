"""Data: image folders, MATLAB-compatible resizing, degradations."""

"""Datasets on disk: finding them, reading their texts (and their own vectors), validated."""

"""Data: importers for raw data sets, the in-memory image arrays, and the loaders."""

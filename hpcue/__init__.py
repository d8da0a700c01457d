"""hpcue: Unlearnable Clusters for image data sets, from one laptop to many GPU nodes."""

__version__ = "0.1.0"

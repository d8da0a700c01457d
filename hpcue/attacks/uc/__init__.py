"""Unlearnable Clusters (Zhang et al., CVPR 2023): K-means over surrogate features, then one
generator per cluster pulling its images' features to the next cluster's center."""

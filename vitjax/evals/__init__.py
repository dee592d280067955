"""Evaluations of learned representations on whole splits: kNN, nearest class mean, linear probe
(``representation``), zero-shot classification and retrieval for image-text models."""

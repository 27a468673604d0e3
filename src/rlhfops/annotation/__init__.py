"""Annotation: where labels come from (judges, preference pairs, step labels, active learning, review)."""

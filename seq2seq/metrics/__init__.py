"""Metrics of each head: translation (sacrebleu), classification, language modelling."""

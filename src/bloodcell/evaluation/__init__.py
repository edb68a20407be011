"""Evaluation: scoring models over images, evaluation results, label maps, perturbations."""

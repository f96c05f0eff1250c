"""Dataset building: sources, validation, split adjustment, features, targets, quality report."""

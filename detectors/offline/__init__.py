"""The core run offline: replay in event order, prequential evaluation against outcomes,
comparison with simulator ground truth, outcome labels and public-dataset converters."""

"""atft: training and evaluation of the ATFT-GAT-FAN stock-return model."""

__version__ = "0.1.0"

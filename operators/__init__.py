"""The project's reusable MONAI Deploy operators and the pure functions behind them."""

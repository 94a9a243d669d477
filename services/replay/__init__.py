"""Topic replay for backtests: backtest, evaluate, search and redrive slices of a topic."""

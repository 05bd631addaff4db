"""`stallwatch backtest`: replay a history of events against a rules file, with a simulated clock."""

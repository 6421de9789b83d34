"""Calls and legs: the status table, the call service, the runner and admission."""

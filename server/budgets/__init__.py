"""Budgets: caps on spend per scope (global, a user, a conversation) and period, enforced when a call is admitted."""

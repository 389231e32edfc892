"""Analyses: functions from the cohort's analysis table to plain results (dataclasses)."""

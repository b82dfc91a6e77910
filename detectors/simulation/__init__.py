"""Simulated traffic with ground truth: personas, their sessions, and what really happened."""

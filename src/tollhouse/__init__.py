"""Tollhouse."""

"""Tests that act as a hostile client of a running gateway."""

"""Committed measurement sets (package data, installed as iosim.measurements): one folder per GPU."""

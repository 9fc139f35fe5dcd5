"""Committed per-loop SASS instruction mixes of our Triton kernels, one JSON file per arch and Triton version."""

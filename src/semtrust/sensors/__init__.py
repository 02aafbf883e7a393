"""Sensors: kernel mechanisms that turn security events into canonical Events."""

"""Converters from the original research checkpoints to zoo Hub folders, and the one safe reader they share."""

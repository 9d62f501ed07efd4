"""An example user detector for pgaudit: see detectors.py and ../README.md."""

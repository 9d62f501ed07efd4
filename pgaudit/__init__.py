"""pgaudit: audit and harden visual anomaly detectors against adversarial attacks."""

__version__ = "0.1.0"

"""urbanfusion: urban function maps from satellite imagery fused with mobile-phone signalling."""

__version__ = "0.1.0"

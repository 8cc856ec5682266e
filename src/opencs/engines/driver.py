"""The cluster driver interface (Magnum-style): what a cluster engine must do. Filled in by the architecture work."""

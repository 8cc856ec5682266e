"""The application engine interface: stacks on a cluster (deploy, scale, stop/start/kill, release slots)."""
